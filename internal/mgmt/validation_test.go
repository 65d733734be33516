package mgmt

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const uami = "/subscriptions/" + testSub + "/resourceGroups/" + testRG + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cache-id"

// TestValidationOverHTTP sends each invalid request through the API and
// checks the ARM status, code and message, and that nothing was written.
func TestValidationOverHTTP(t *testing.T) {
	f := newFixture(t, func(o *Options) {
		o.MaxRules = 6
		o.ValidateSecretRef = func(ref string) error {
			if !strings.Contains(ref, "://") {
				return errInvalidRefForTest
			}
			return nil
		}
	})
	ctx := context.Background()
	rules := base("default") + "/cacheRules/"
	sets := base("default") + "/credentialSets/"
	setup := []struct {
		path string
		body any
	}{
		{sets + "dockerhub", credSetBody("docker.io", "env://HUB_USER", "env://HUB_PASS")},
		{sets + "quaycreds", credSetBody("quay.io", "env://Q_USER", "env://Q_PASS")},
		{rules + "mcrall", ruleBody("mcr.microsoft.com/*", "*", "")},
		{rules + "dotnet1", ruleBody("mcr.microsoft.com/dotnet/sdk", "dotnet/sdk", "")},
		{rules + "hubrule", ruleBody("docker.io/library/ubuntu", "ubuntu", "dockerhub")},
		{rules + "quayrule", ruleBody("quay.io/org/app", "quayapp", "quaycreds")},
	}
	for _, s := range setup {
		mustStatus(t, "setup "+s.path, f.do(http.MethodPut, s.path, s.body), http.StatusCreated)
	}
	// Pushed content (after the rule targeting *, which it would block);
	// teamreg has no * rule, so its wildcard checks reach the repositories.
	for _, repo := range []string{"default/pushed", "default/team/app", "teamreg/team/app"} {
		reg, name, _ := strings.Cut(repo, "/")
		if err := f.meta.LinkBlob(ctx, reg, name, digest.FromString(repo), 1); err != nil {
			t.Fatal(err)
		}
		if err := f.meta.MarkPushed(ctx, reg, name); err != nil {
			t.Fatal(err)
		}
	}
	// Content cached through a rule is not pushed content: it blocks nothing.
	if err := f.meta.LinkBlob(ctx, "teamreg", "cachedonly/app", digest.FromString("cached"), 1); err != nil {
		t.Fatal(err)
	}
	withProps := func(b map[string]any, kv ...any) map[string]any {
		p := b["properties"].(map[string]any)
		for i := 0; i < len(kv); i += 2 {
			p[kv[i].(string)] = kv[i+1]
		}
		return b
	}
	for _, tc := range []struct {
		desc     string
		method   string
		path     string
		body     any
		status   int
		code     string
		contains string
	}{
		{"rule name too short", "PUT", rules + "abc", ruleBody("quay.io/a/b", "b", ""), 400, "InvalidResourceName", "5 to 50"},
		{"rule name with underscore", "PUT", rules + "my_rule", ruleBody("quay.io/a/b", "b", ""), 400, "InvalidResourceName", "my_rule"},
		{"tag in source", "PUT", rules + "python1", ruleBody("docker.io/library/python:3.11-bookworm", "python", "dockerhub"), 400, "InvalidRepositoryName",
			"Repository names should follow the standardized docker repository naming conventions. All characters should be lowercase. For more information, please visit https://aka.ms/acr/cache."},
		{"upper-case source", "PUT", rules + "upper", ruleBody("quay.io/Org/App", "app", ""), 400, "InvalidRepositoryName", "sourceRepository"},
		{"source without login server", "PUT", rules + "nohost", ruleBody("MySourceRepository", "mytarget", ""), 400, "InvalidRepositoryName", "<login server>/<path>"},
		{"bad target", "PUT", rules + "badtarget", ruleBody("quay.io/a/b", "ubuntu-", ""), 400, "InvalidRepositoryName", "targetRepository"},
		{"upper-case target", "PUT", rules + "badtarget", ruleBody("quay.io/a/b", "MyTargetRepository", ""), 400, "InvalidRepositoryName", "targetRepository"},
		{"missing source", "PUT", rules + "nosource", map[string]any{"properties": map[string]any{"targetRepository": "x"}}, 400, "InvalidRepositoryName", "sourceRepository is required"},
		{"wildcard in the middle", "PUT", rules + "wild1", ruleBody("quay.io/*/b", "x/*", ""), 400, "InvalidWildcardCacheRule", "trailing /*"},
		{"wildcard source, static target", "PUT", rules + "wild2", ruleBody("quay.io/org/*", "org", ""), 400, "InvalidWildcardCacheRule", "both"},
		{"docker hub without credentials", "PUT", rules + "hubnocreds", ruleBody("docker.io/library/nginx", "nginx", ""), 400, "EnforceDockerAuthentication",
			"Cannot create cache rule pointing to Docker Hub without credentials. Please add a credential set to cache rule. Learn more: https://aka.ms/acr/cache-auth"},
		{"missing credential set", "PUT", rules + "ghcr1", ruleBody("ghcr.io/a/b", "ghcrb", "nosuchset"), 400, "CredentialSetNotFound", "nosuchset"},
		{"credential set of another registry", "PUT", rules + "ghcr1", withProps(ruleBody("ghcr.io/a/b", "ghcrb", ""), "credentialSetResourceId", base("teamreg")+"/credentialSets/dockerhub"), 400, "InvalidCredentialSetResourceId", "credentialSetResourceId"},
		{"credential set ID garbage", "PUT", rules + "ghcr1", withProps(ruleBody("ghcr.io/a/b", "ghcrb", ""), "credentialSetResourceId", "dockerhub"), 400, "InvalidCredentialSetResourceId", ""},
		{"login server mismatch", "PUT", rules + "ghcr1", ruleBody("ghcr.io/a/b", "ghcrb", "dockerhub"), 400, "CredentialSetLoginServerMismatch", "docker.io"},
		{"referrers without active sync", "PUT", rules + "sync1", withProps(ruleBody("quay.io/a/b", "syncb", ""), "syncReferrers", "Enabled"), 400, "InvalidArtifactSyncConfiguration", "syncReferrers 'Enabled' requires syncMode 'ActiveSync'"},
		{"filters without active sync", "PUT", rules + "sync2", withProps(ruleBody("quay.io/a/b", "syncb", ""), "syncMode", "PassiveSync",
			"artifactSyncFilters", map[string]any{"platforms": map[string]any{"type": "array", "values": []string{"linux/amd64"}}}), 400, "InvalidArtifactSyncConfiguration", "require syncMode 'ActiveSync'"},
		{"bad KQL", "PUT", rules + "sync3", withProps(ruleBody("quay.io/a/b", "syncb", ""), "syncMode", "ActiveSync",
			"artifactSyncFilters", map[string]any{"tags": map[string]any{"type": "KQL", "query": "Tags | where Name matches regex 'x'"}}), 400, "InvalidArtifactSyncConfiguration", "tags.query"},
		{"bad sync mode", "PUT", rules + "sync4", withProps(ruleBody("quay.io/a/b", "syncb", ""), "syncMode", "Sometimes"), 400, "InvalidArtifactSyncConfiguration", "syncMode"},
		{"bad image type filter", "PUT", rules + "sync5", withProps(ruleBody("quay.io/a/b", "syncb", ""), "syncMode", "ActiveSync",
			"artifactSyncFilters", map[string]any{"imageTypes": map[string]any{"type": "both", "values": []string{"a/b"}}}), 400, "InvalidArtifactSyncConfiguration", "include or exclude"},
		{"preview property on GA version", "PUT", rules + "sync6?api-version=2023-07-01", withProps(ruleBody("quay.io/a/b", "syncb", ""), "syncMode", "ActiveSync"), 400, "InvalidRequestContent", "2023-07-01"},
		{"identity on GA version", "PUT", rules + "ident1?api-version=2023-07-01", map[string]any{"identity": map[string]any{"type": "UserAssigned"}, "properties": map[string]any{"sourceRepository": "x.azurecr.io/a", "targetRepository": "a"}}, 400, "InvalidRequestContent", "identity"},
		{"bad identity ID", "PUT", rules + "ident2", map[string]any{"identity": map[string]any{"type": "UserAssigned", "userAssignedIdentities": map[string]any{"/subscriptions/x/bad": map[string]any{}}},
			"properties": map[string]any{"sourceRepository": "up.azurecr.io/a", "targetRepository": "upa"}}, 400, "InvalidIdentity", "Invalid user-assigned managed identity resource ID"},
		{"system identity on a rule", "PUT", rules + "ident3", map[string]any{"identity": map[string]any{"type": "SystemAssigned"},
			"properties": map[string]any{"sourceRepository": "up.azurecr.io/a", "targetRepository": "upa"}}, 400, "InvalidIdentity", "UserAssigned"},
		{"unsupported GAR authentication", "PUT", rules + "garrule?api-version=2026-03-01-preview", withProps(ruleBody("us-west1-docker.pkg.dev/repository/hello-world", "hello", ""),
			"additionalAuthenticationProperties", map[string]any{"type": "GoogleArtifactRegistry"}), 400, "InvalidRequestContent", "additionalAuthenticationProperties"},
		{"artifact sync v1 properties", "PUT", rules + "v1sync?api-version=2024-01-01-preview", withProps(ruleBody("quay.io/a/b", "syncb", ""),
			"artifactSyncScopeFilterProperties", map[string]any{"type": "KQL", "query": "Tags"}), 400, "InvalidRequestContent", "artifactSyncFilters"},
		{"malformed JSON", "PUT", rules + "json1", `{"properties": {`, 400, "InvalidRequestContent", "malformed JSON"},
		{"empty body", "PUT", rules + "json2", "", 400, "InvalidRequestContent", "null or empty"},
		{"wrong JSON type", "PUT", rules + "json3", `{"properties":{"sourceRepository":5,"targetRepository":"x"}}`, 400, "InvalidRequestContent", "string"},
		{"body too large", "PUT", rules + "json4", `{"properties":{"sourceRepository":"` + strings.Repeat("a", 1<<20) + `"}}`, 413, "RequestTooLarge", ""},
		{"seed 002 example 1 over HTTP: * blocks library/*", "PUT", rules + "dockerlib", ruleBody("docker.io/library/*", "library/*", "dockerhub"), 409, "WildcardCacheRuleConflict", "mcrall"},
		{"same static target", "PUT", rules + "ubuntu2", ruleBody("quay.io/ubuntu/ubuntu", "ubuntu", ""), 409, "CacheRuleTargetConflict", "hubrule"},
		{"target already pushed", "PUT", rules + "pushedrule", ruleBody("quay.io/a/pushed", "pushed", ""), 409, "TargetRepositoryAlreadyPresentInRegistry",
			"Conflict: Target repository 'pushed' is already present in registry. Cache rules cannot be created for existing repositories in registry. For more information, please visit https://aka.ms/acr/cache"},
		{"wildcard over pushed repositories", "PUT", base("teamreg") + "/cacheRules/teamwild", ruleBody("quay.io/team/*", "team/*", ""), 409, "TargetRepositoryPrefixMatchesExistingRegistries", "team/*"},
		{"changing a rule's target", "PUT", rules + "dotnet1", ruleBody("mcr.microsoft.com/dotnet/sdk", "dotnet/sdk2", ""), 400, "PropertyChangeNotAllowed", "dotnet/sdk"},
		{"removing docker hub credentials by PATCH", "PATCH", rules + "hubrule", map[string]any{"properties": map[string]any{"credentialSetResourceId": nil}}, 400, "EnforceDockerAuthentication", ""},
		{"credential set in use", "DELETE", sets + "dockerhub", nil, 409, "CredentialSetInUse", "hubrule"},
		{"moving a used credential set", "PUT", sets + "quaycreds", credSetBody("ghcr.io", "env://Q_USER", "env://Q_PASS"), 409, "CredentialSetInUse", "quayrule"},
		{"credential set name", "PUT", sets + "a.b.c.d", credSetBody("docker.io", "env://U", "env://P"), 400, "InvalidResourceName", "credential set name"},
		{"credential set login server", "PUT", sets + "badserver", credSetBody("docker.io/library", "env://U", "env://P"), 400, "InvalidLoginServer", "loginServer"},
		{"credential set without login server", "PUT", sets + "noserver", credSetBody("", "env://U", "env://P"), 400, "InvalidLoginServer", "required"},
		{"credential set bad reference", "PUT", sets + "badref", credSetBody("docker.io", "env://U", "not-a-reference"), 400, "InvalidSecretIdentifier", "passwordSecretIdentifier"},
		{"credential set missing username", "PUT", sets + "nouser", credSetBody("docker.io", "", "env://P"), 400, "InvalidSecretIdentifier", "usernameSecretIdentifier"},
		{"credential set without credentials", "PUT", sets + "nocreds", map[string]any{"properties": map[string]any{"loginServer": "docker.io"}}, 400, "InvalidAuthCredentials", "Credential1"},
		{"credential set two credentials", "PUT", sets + "twocreds", map[string]any{"properties": map[string]any{"loginServer": "docker.io", "authCredentials": []any{
			map[string]any{"name": "Credential1", "usernameSecretIdentifier": "env://A", "passwordSecretIdentifier": "env://B"},
			map[string]any{"name": "Credential2", "usernameSecretIdentifier": "env://A", "passwordSecretIdentifier": "env://B"}}}}, 400, "InvalidAuthCredentials", "exactly one"},
		{"credential set wrong credential name", "PUT", sets + "othername", map[string]any{"properties": map[string]any{"loginServer": "docker.io", "authCredentials": []any{
			map[string]any{"name": "Primary", "usernameSecretIdentifier": "env://A", "passwordSecretIdentifier": "env://B"}}}}, 400, "InvalidAuthCredentials", "Credential1"},
		{"credential set user-assigned without an identity", "PUT", sets + "uamiset", map[string]any{"identity": map[string]any{"type": "UserAssigned"},
			"properties": map[string]any{"loginServer": "docker.io", "authCredentials": []any{
				map[string]any{"name": "Credential1", "usernameSecretIdentifier": "env://A", "passwordSecretIdentifier": "env://B"}}}}, 400, "InvalidIdentity", "exactly one user-assigned identity"},
		{"PATCH login server", "PATCH", sets + "dockerhub", map[string]any{"properties": map[string]any{"loginServer": "quay.io"}}, 400, "PropertyChangeNotAllowed", "loginServer"},
	} {
		before := f.snapshot()
		r := f.do(tc.method, tc.path, tc.body)
		if r.status != tc.status || r.errorCode() != tc.code || !strings.Contains(r.errorMessage(), tc.contains) {
			t.Errorf("%s: %d %s\n want %d %s containing %q", tc.desc, r.status, truncate(r.body), tc.status, tc.code, tc.contains)
		}
		if after := f.snapshot(); after != before {
			t.Errorf("%s: a rejected request changed state:\n before %s\n after  %s", tc.desc, before, after)
		}
	}

	// Quota: 4 rules exist, MaxRules is 6.
	mustStatus(t, "rule 5", f.do(http.MethodPut, rules+"fifth", ruleBody("quay.io/org/five", "five", "")), http.StatusCreated)
	mustStatus(t, "rule 6", f.do(http.MethodPut, rules+"sixth", ruleBody("quay.io/org/six", "six", "")), http.StatusCreated)
	r := f.do(http.MethodPut, rules+"seventh", ruleBody("quay.io/org/seven", "seven", ""))
	if r.status != http.StatusConflict || r.errorCode() != "QuotaExceeded" {
		t.Errorf("rule 7: %d %s", r.status, r.body)
	}
	// Replacing an existing rule is not a new rule.
	mustStatus(t, "replace at the limit", f.do(http.MethodPut, rules+"sixth", ruleBody("quay.io/org/six", "six", "")), http.StatusOK)

	// PATCH credentialSetResourceId null removes the set where that is allowed.
	r = f.do(http.MethodPatch, rules+"quayrule", map[string]any{"properties": map[string]any{"credentialSetResourceId": nil}})
	mustStatus(t, "remove credential set", r, http.StatusCreated)
	if strings.Contains(string(r.body), "credentialSetResourceId") {
		t.Errorf("credential set still shown: %s", r.body)
	}
	// Now unused, the set can be deleted; a static rule under mcrall's * is allowed.
	mustStatus(t, "delete unused set", f.do(http.MethodDelete, sets+"quaycreds", nil), http.StatusAccepted)
	mustStatus(t, "static under *", f.do(http.MethodPut, rules+"quayrule", ruleBody("quay.io/org/app", "quayapp", "")), http.StatusOK)
}

type testError string

func (e testError) Error() string { return string(e) }

const errInvalidRefForTest = testError("not a secret reference")

// snapshot renders the registry's rules and sets, to compare around a
// rejected request.
func (f *fixture) snapshot() string {
	f.t.Helper()
	var b strings.Builder
	for _, kind := range []string{"cacheRules", "credentialSets"} {
		r := f.do(http.MethodGet, base("default")+"/"+kind, nil)
		b.Write(r.body)
	}
	return b.String()
}

func truncate(b []byte) string {
	if len(b) > 400 {
		return string(b[:400]) + "..."
	}
	return string(b)
}
