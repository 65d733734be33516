package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/oidcfixture"
)

// upstreamWithIdentity is arca A (closed) holding myapp:v1 and other:v1,
// an identity with a federated credential for the fixture's subject sub,
// in ABAC mode with Container Registry Repository Reader on
// repositories/myapp only (seed 001's setup, az → arca).
type upstreamWithIdentity struct {
	a            *arca
	identityID   string
	principalID  string
	admin        *tool
	myapp, other *testImage
}

func setupUpstreamIdentity(t *testing.T, iss *oidcfixture.Issuer, sub string, extra ...string) *upstreamWithIdentity {
	t.Helper()
	u := &upstreamWithIdentity{a: startClosedArca(t, extra...)}
	a := u.a
	u.myapp, u.other = newImage(t, 141, "amd64", 16<<10), newImage(t, 142, "amd64", 16<<10)
	u.admin = crane(t)
	u.admin.run("auth", "login", a.Addr, "-u", "default", "-p", a.adminPassword(t))
	u.admin.crane("push", u.myapp.writeLayout(t), a.Ref("myapp:v1"))
	u.admin.crane("push", u.other.writeLayout(t), a.Ref("other:v1"))

	a.cli(t, "identity", "create", "--name", "MyACRCacheIdentity", "--resource-group", "MyResourceGroup")
	u.principalID = strings.TrimSpace(a.cli(t, "identity", "show", "--name", "MyACRCacheIdentity", "--resource-group", "MyResourceGroup", "--query", "principalId", "-o", "tsv"))
	u.identityID = strings.TrimSpace(a.cli(t, "identity", "show", "--name", "MyACRCacheIdentity", "--resource-group", "MyResourceGroup", "--query", "id", "-o", "tsv"))
	if len(u.principalID) != 36 || !strings.HasSuffix(u.identityID, "/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/MyACRCacheIdentity") {
		t.Fatalf("identity show: principalId %q id %q", u.principalID, u.identityID)
	}
	a.cli(t, "identity", "federated-credential", "create", "--identity-name", "MyACRCacheIdentity", "-g", "MyResourceGroup",
		"-n", "downstream", "--issuer", iss.URL(), "--subject", sub, "--audiences", "api://AzureADTokenExchange")
	a.cli(t, "update", "--name", "default", "--role-assignment-mode", "rbac-abac")
	upstreamID := strings.TrimSpace(a.cli(t, "show", "--name", "default", "--query", "id", "-o", "tsv"))
	a.cli(t, "role", "assignment", "create", "--role", "Container Registry Repository Reader",
		"--assignee", u.principalID, "--scope", upstreamID+"/repositories/myapp")
	return u
}

func writeToken(t *testing.T, path, tok string) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", []byte(tok), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// Registry-to-registry caching with an identity: B holds no credential,
// only the rule's identity id and a federated token file; A accepts the
// token through the identity's federated credential and grants what the
// role assignment allows.
func TestIdentityRegistryToRegistry(t *testing.T) {
	iss := oidcfixture.Start(t)
	const sub = "system:serviceaccount:arca:downstream"
	// Short access tokens on A, so B has to come back for new ones.
	u := setupUpstreamIdentity(t, iss, sub, "--access-token-ttl", "3s")
	a := u.a

	tokFile := filepath.Join(t.TempDir(), "azure-identity-token")
	writeToken(t, tokFile, iss.Token(t, sub, "api://AzureADTokenExchange", 62*time.Second))
	b := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: []string{"--insecure-upstream", a.Addr},
		Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken, "AZURE_FEDERATED_TOKEN_FILE=" + tokFile}})}
	b.cli(t, "cache", "create", "-r", "default", "-n", "MyRule", "-s", a.Addr+"/myapp", "-t", "myapp", "--identity", u.identityID)
	b.cli(t, "cache", "create", "-r", "default", "-n", "OtherRule", "-s", a.Addr+"/other", "-t", "other", "--identity", u.identityID)

	c := crane(t)
	if got := c.crane("digest", b.Ref("myapp:v1")); got != u.myapp.Digest() {
		t.Fatalf("myapp through B: %s, want %s", got, u.myapp.Digest())
	}
	c.crane("pull", "--format", "oci", b.Ref("myapp:v1"), t.TempDir())
	if got := b.cli(t, "cache", "show", "-r", "default", "-n", "MyRule", "--query", "identityStatus.status", "-o", "tsv"); strings.TrimSpace(got) != "Healthy" {
		t.Errorf("MyRule identityStatus: %q", got)
	}

	// other: the identity has no role on it; refused upstream, and said so.
	out, err := c.try("--insecure", "digest", b.Ref("other:v1"))
	if err == nil || !strings.Contains(out, "OtherRule") {
		t.Errorf("other through B: want a 424 naming OtherRule, got %v\n%s", err, out)
	}
	st := b.cli(t, "cache", "show", "-r", "default", "-n", "OtherRule", "--query", "identityStatus", "-o", "json")
	if !strings.Contains(st, "Unhealthy") || !strings.Contains(st, "role missing") {
		t.Errorf("OtherRule identityStatus: %s", st)
	}

	// The federated token expires: new upstream requests fail, naming the
	// rule and the reason; a fresh token (signed with a rotated key, so A
	// must re-read the JWKS) makes them work again.
	u.admin.crane("tag", a.Ref("myapp:v1"), "v2")
	u.admin.crane("tag", a.Ref("myapp:v1"), "v3")
	time.Sleep(4 * time.Second) // B's cached access and refresh tokens are past their time
	writeToken(t, tokFile, iss.Token(t, sub, "api://AzureADTokenExchange", -time.Minute))
	out, err = c.try("--insecure", "digest", b.Ref("myapp:v2"))
	if err == nil || !strings.Contains(out, "MyRule") || !strings.Contains(out, "expired") {
		t.Errorf("expired token: want a 424 naming MyRule and the expiry, got %v\n%s", err, out)
	}
	jwks := iss.JWKSRequests()
	iss.Rotate(t)
	writeToken(t, tokFile, iss.Token(t, sub, "api://AzureADTokenExchange", 62*time.Second))
	if got := c.crane("digest", b.Ref("myapp:v2")); got != u.myapp.Digest() {
		t.Fatalf("after a fresh token: %s", got)
	}
	if iss.JWKSRequests() <= jwks {
		t.Errorf("A did not re-read the JWKS after the key rotation")
	}

	// A token for another subject is no identity.
	writeToken(t, tokFile, iss.Token(t, "system:serviceaccount:arca:intruder", "api://AzureADTokenExchange", 62*time.Second))
	time.Sleep(4 * time.Second)
	out, err = c.try("--insecure", "digest", b.Ref("myapp:v3"))
	if err == nil || !strings.Contains(out, "MyRule") || !strings.Contains(out, "no federated credential") {
		t.Errorf("foreign subject: want refused naming MyRule, got %v\n%s", err, out)
	}
	writeToken(t, tokFile, iss.Token(t, sub, "api://AzureADTokenExchange", 62*time.Second))
	time.Sleep(4 * time.Second)

	// The identity deleted: refused, even with tokens issued before.
	a.cli(t, "identity", "delete", "-n", "MyACRCacheIdentity", "-g", "MyResourceGroup")
	time.Sleep(4 * time.Second)
	out, err = c.try("--insecure", "digest", b.Ref("myapp:v3"))
	if err == nil || !strings.Contains(out, "MyRule") {
		t.Errorf("deleted identity: want refused naming MyRule, got %v\n%s", err, out)
	}
	t.Logf("deleted identity: %s", out)
}

// A downstream on a host with a managed identity: azidentity's managed
// identity credential (App Service protocol: IDENTITY_ENDPOINT and
// IDENTITY_HEADER) gets an ACR-audience token for the rule's identity from
// the fixture, and arca's own /oauth2/exchange is the ACR-protocol
// upstream that accepts it.
func TestIdentityManagedIdentityEndpoint(t *testing.T) {
	iss := oidcfixture.Start(t)
	// The fixture's tokens name the identity asked for (mi_res_id) as sub.
	idID := "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/MyACRCacheIdentity"
	u := setupUpstreamIdentity(t, iss, strings.ToLower(idID))
	a := u.a
	if !strings.EqualFold(u.identityID, idID) {
		t.Fatalf("identity id %q", u.identityID)
	}
	a.cli(t, "identity", "federated-credential", "create", "--identity-name", "MyACRCacheIdentity", "-g", "MyResourceGroup",
		"-n", "entra", "--issuer", iss.URL(), "--subject", strings.ToLower(idID), "--audiences", "https://containerregistry.azure.net")

	b := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: []string{"--insecure-upstream", a.Addr},
		Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken, "IDENTITY_ENDPOINT=" + iss.URL() + oidcfixture.MSIPath, "IDENTITY_HEADER=" + iss.Header}})}
	b.cli(t, "cache", "create", "-r", "default", "-n", "MyRule", "-s", a.Addr+"/myapp", "-t", "myapp", "--identity", u.identityID)
	c := crane(t)
	if got := c.crane("digest", b.Ref("myapp:v1")); got != u.myapp.Digest() {
		t.Fatalf("myapp through B: %s, want %s", got, u.myapp.Digest())
	}
	if iss.MSIRequests() == 0 {
		t.Fatal("the managed identity endpoint was not used")
	}
}

// A role assignment with an ABAC condition (az role assignment create
// --condition, az → arca): Repository Reader on the whole upstream
// registry, limited to repositories starting with team-a/. B pulls
// team-a/app through a wildcard rule with the identity; team-a-infra/app
// (no trailing slash match) and other are refused upstream. An
// unsupported condition is refused with one line naming the problem.
func TestIdentityRoleCondition(t *testing.T) {
	iss := oidcfixture.Start(t)
	const sub = "system:serviceaccount:arca:downstream"
	u := setupUpstreamIdentity(t, iss, sub)
	a := u.a
	teamA, infra := newImage(t, 171, "amd64", 16<<10), newImage(t, 172, "amd64", 16<<10)
	u.admin.crane("push", teamA.writeLayout(t), a.Ref("team-a/app:v1"))
	u.admin.crane("push", infra.writeLayout(t), a.Ref("team-a-infra/app:v1"))
	upstreamID := strings.TrimSpace(a.cli(t, "show", "--name", "default", "--query", "id", "-o", "tsv"))
	out := a.cli(t, "role", "assignment", "create", "--role", "Container Registry Repository Reader", "--assignee", u.principalID,
		"--scope", upstreamID, "--condition-version", "2.0", "--condition",
		"((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'}) AND !(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/metadata/read'})) OR "+
			"(@Resource[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team-a/'))")
	if !strings.Contains(out, `"conditionVersion": "2.0"`) || !strings.Contains(out, "StringStartsWithIgnoreCase 'team-a/'") {
		t.Fatalf("role assignment create: %s", out)
	}
	bad, err := a.tryCLI("role", "assignment", "create", "--role", "Container Registry Repository Reader", "--assignee", u.principalID,
		"--scope", upstreamID, "--condition", "@Principal[Microsoft.Directory/CustomSecurityAttributes/Id:Project] StringEquals 'x'")
	if err == nil || !strings.Contains(bad, "arca: (InvalidRoleAssignmentCondition)") || !strings.Contains(bad, "@Principal") {
		t.Fatalf("unsupported condition: %v\n%s", err, bad)
	}

	tokFile := filepath.Join(t.TempDir(), "azure-identity-token")
	writeToken(t, tokFile, iss.Token(t, sub, "api://AzureADTokenExchange", time.Hour))
	b := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: []string{"--insecure-upstream", a.Addr},
		Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken, "AZURE_FEDERATED_TOKEN_FILE=" + tokFile}})}
	b.cli(t, "cache", "create", "-r", "default", "-n", "TeamA", "-s", a.Addr+"/team-a/*", "-t", "team-a/*", "--identity", u.identityID)
	b.cli(t, "cache", "create", "-r", "default", "-n", "Infra", "-s", a.Addr+"/team-a-infra/app", "-t", "infra/app", "--identity", u.identityID)
	b.cli(t, "cache", "create", "-r", "default", "-n", "Other", "-s", a.Addr+"/other", "-t", "other", "--identity", u.identityID)
	b.cli(t, "cache", "create", "-r", "default", "-n", "MyRule", "-s", a.Addr+"/myapp", "-t", "myapp", "--identity", u.identityID)
	c := crane(t)
	if got := c.crane("digest", b.Ref("team-a/app:v1")); got != teamA.Digest() {
		t.Fatalf("team-a/app through B: %s, want %s", got, teamA.Digest())
	}
	for rule, ref := range map[string]string{"Infra": "infra/app:v1", "Other": "other:v1"} {
		if out, err := c.try("--insecure", "digest", b.Ref(ref)); err == nil || !strings.Contains(out, rule) {
			t.Errorf("%s through B: want refused naming rule %s, got %v\n%s", ref, rule, err, out)
		}
	}
	// The seed's repository-scoped assignment still adds up.
	if got := c.crane("digest", b.Ref("myapp:v1")); got != u.myapp.Digest() {
		t.Fatalf("myapp through B: %s", got)
	}
}

// A host with no OIDC issuer: the identity's client secret (arca identity
// credential reset) signs in as the identity with its client id, from
// crane directly and from a downstream arca's credential set; the role
// assignment still decides (myapp yes, other no); a reset ends the old
// secret; the secret is in no log.
func TestIdentityClientSecret(t *testing.T) {
	iss := oidcfixture.Start(t)
	u := setupUpstreamIdentity(t, iss, "unused-subject")
	a := u.a
	clientID := strings.TrimSpace(a.cli(t, "identity", "show", "-n", "MyACRCacheIdentity", "-g", "MyResourceGroup", "--query", "clientId", "-o", "tsv"))
	secret := strings.TrimSpace(a.cli(t, "identity", "credential", "reset", "-n", "MyACRCacheIdentity", "-g", "MyResourceGroup", "--query", "clientSecret", "-o", "tsv"))
	if len(secret) < 40 {
		t.Fatalf("secret %q", secret)
	}
	c := crane(t)
	c.run("auth", "login", a.Addr, "-u", clientID, "-p", secret)
	if got := c.crane("digest", a.Ref("myapp:v1")); got != u.myapp.Digest() {
		t.Fatalf("myapp as the identity: %s", got)
	}
	out, err := c.try("--insecure", "digest", a.Ref("other:v1"))
	refused(t, "other as the identity", out, err)

	// B caches from A with a credential set holding the client id and secret.
	const secretEnv = "ARCA_E2E_IDENTITY_SECRET"
	b := startCachingArca(t, []string{a.Addr}, []string{secretEnv + "=" + secret, "ARCA_E2E_CLIENT_ID=" + clientID})
	b.cli(t, "credential-set", "create", "-r", "default", "-n", "upstreamid", "-l", a.Addr, "-u", "env://ARCA_E2E_CLIENT_ID", "-p", "env://"+secretEnv, "-o", "none")
	b.cacheRule(t, "myapp", a.Addr+"/myapp", "myapp", "-c", "upstreamid")
	if got := crane(t).crane("digest", b.Ref("myapp:v1")); got != u.myapp.Digest() {
		t.Fatalf("myapp through B with the client secret: %s", got)
	}

	// Rotation: the old secret stops working at once.
	newSecret := strings.TrimSpace(a.cli(t, "identity", "credential", "reset", "-n", "MyACRCacheIdentity", "-g", "MyResourceGroup", "--query", "clientSecret", "-o", "tsv"))
	old := crane(t)
	if out, err := old.try("auth", "login", a.Addr, "-u", clientID, "-p", secret); err == nil {
		if out, err := old.try("--insecure", "digest", a.Ref("myapp:v1")); err == nil {
			t.Fatalf("the old secret still pulls after a reset: %s", out)
		}
	} else {
		t.Logf("old secret refused at login: %s", out)
	}
	fresh := crane(t)
	fresh.run("auth", "login", a.Addr, "-u", clientID, "-p", newSecret)
	if got := fresh.crane("digest", a.Ref("myapp:v1")); got != u.myapp.Digest() {
		t.Fatalf("myapp with the new secret: %s", got)
	}
	for _, p := range []*arca{a, b} {
		if strings.Contains(p.Logs(), secret) || strings.Contains(p.Logs(), newSecret) {
			t.Fatal("a client secret is in a server log")
		}
	}
}

// A client secret has an end (--years, default 1, or --end-date, as az ad
// sp credential reset): the identity shows it, and after it crane is
// refused with 401 "the client secret has expired", which the audit log
// records, without the secret in any log or answer.
func TestIdentityClientSecretExpiry(t *testing.T) {
	iss := oidcfixture.Start(t)
	u := setupUpstreamIdentity(t, iss, "unused-subject")
	a := u.a
	idArgs := []string{"-n", "MyACRCacheIdentity", "-g", "MyResourceGroup"}
	identity := func(args ...string) string {
		t.Helper()
		return strings.TrimSpace(a.cli(t, append(append([]string{"identity"}, args...), idArgs...)...))
	}
	clientID := identity("show", "--query", "clientId", "-o", "tsv")

	// The default: a year.
	var reset struct{ ClientSecret, CreatedDateTime, EndDateTime string }
	if err := json.Unmarshal([]byte(identity("credential", "reset", "-o", "json")), &reset); err != nil {
		t.Fatal(err)
	}
	created, _ := time.Parse(time.RFC3339, reset.CreatedDateTime)
	if end, err := time.Parse(time.RFC3339, reset.EndDateTime); err != nil || end.Sub(created) < 364*24*time.Hour || end.Sub(created) > 366*24*time.Hour {
		t.Errorf("default end %q (created %q), want a year later", reset.EndDateTime, reset.CreatedDateTime)
	}
	if got := identity("show", "--query", "clientSecretEndDateTime", "-o", "tsv"); got != reset.EndDateTime {
		t.Errorf("identity's clientSecretEndDateTime %q, want %q", got, reset.EndDateTime)
	}
	for _, bad := range [][]string{{"--end-date", "2020-01-01"}, {"--years", "2", "--end-date", "2099-01-01"}, {"--years", "0"}} {
		out, err := a.tryCLI(append(append([]string{"identity", "credential", "reset"}, idArgs...), bad...)...)
		if err == nil || !strings.HasPrefix(strings.TrimSpace(out), "arca: ") {
			t.Errorf("reset %v: %v\n%s", bad, err, out)
		}
	}

	// A secret ending in a few seconds works until then.
	end := time.Now().Add(6 * time.Second).UTC().Truncate(time.Second)
	secret := identity("credential", "reset", "--end-date", end.Format(time.RFC3339), "--query", "clientSecret", "-o", "tsv")
	if got := identity("show", "--query", "clientSecretEndDateTime", "-o", "tsv"); !parsesAs(got, end) {
		t.Errorf("clientSecretEndDateTime %q, want %s", got, end.Format(time.RFC3339))
	}
	c := crane(t)
	c.run("auth", "login", a.Addr, "-u", clientID, "-p", secret)
	if got := c.crane("digest", a.Ref("myapp:v1")); got != u.myapp.Digest() {
		t.Fatalf("myapp before the end: %s", got)
	}
	time.Sleep(time.Until(end) + 500*time.Millisecond)
	out, err := c.try("--insecure", "digest", a.Ref("myapp:v1"))
	if err == nil || !strings.Contains(out, "UNAUTHORIZED") || !strings.Contains(out, "the client secret has expired") {
		t.Errorf("myapp after the end: %v\n%s", err, out)
	}
	if strings.Contains(out, secret) {
		t.Error("the refusal echoes the secret")
	}
	audit := a.cli(t, "audit", "list", "--since", "1h", "-o", "json")
	if !strings.Contains(audit, `"client secret expired"`) || !strings.Contains(audit, clientID) {
		t.Errorf("audit log has no expired client secret login of %s:\n%s", clientID, audit)
	}
	if logs := a.Logs(); !strings.Contains(logs, "client secret expired") || strings.Contains(logs, secret) || strings.Contains(logs, reset.ClientSecret) {
		t.Error("the log does not say the secret expired, or holds a secret")
	}

	// A reset gives a working secret again.
	fresh := identity("credential", "reset", "--years", "2", "--query", "clientSecret", "-o", "tsv")
	c2 := crane(t)
	c2.run("auth", "login", a.Addr, "-u", clientID, "-p", fresh)
	if got := c2.crane("digest", a.Ref("myapp:v1")); got != u.myapp.Digest() {
		t.Fatalf("myapp with a new secret: %s", got)
	}
}

// parsesAs reports whether s is an RFC 3339 time at the instant want.
func parsesAs(s string, want time.Time) bool {
	t, err := time.Parse(time.RFC3339, s)
	return err == nil && t.Equal(want)
}
