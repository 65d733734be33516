package mgmt

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// get returns a JSON path (dot-separated keys) of m.
func get(m map[string]any, path string) any {
	var cur any = m
	for _, k := range strings.Split(path, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = obj[k]
	}
	return cur
}

func TestCacheRulePreviewShapes(t *testing.T) {
	f := newFixture(t)
	p := base("default") + "/cacheRules/synced"
	filters := map[string]any{
		"tags":          map[string]any{"type": "KQL", "query": "Tags | where Name startswith 'v1';"},
		"platforms":     map[string]any{"type": "array", "values": []any{"linux/amd64", "linux/arm64"}},
		"imageTypes":    map[string]any{"type": "include", "values": []any{"application/vnd.oci.image.manifest.v1+json"}},
		"artifactTypes": map[string]any{"type": "Exclude", "values": []any{"application/vnd.cncf.notary.signature"}},
	}
	body := map[string]any{
		"identity": map[string]any{"type": "UserAssigned", "userAssignedIdentities": map[string]any{uami: map[string]any{}}},
		"properties": map[string]any{"sourceRepository": "upstream.azurecr.io/team/*", "targetRepository": "team/*",
			"syncMode": "ActiveSync", "syncReferrers": "Enabled", "artifactSyncFilters": filters},
	}
	mustStatus(t, "create", f.do(http.MethodPut, p, body), http.StatusCreated)
	m := f.do(http.MethodGet, p, nil).json(t)
	uamis, _ := get(m, "identity.userAssignedIdentities").(map[string]any)
	if get(m, "identity.type") != "userAssigned" || len(uamis) != 1 || uamis[uami] == nil {
		t.Errorf("identity: %v", m["identity"])
	}
	want := map[string]any{
		"tags":          map[string]any{"type": "KQL", "query": "Tags | where Name startswith 'v1';"},
		"platforms":     map[string]any{"type": "array", "values": []any{"linux/amd64", "linux/arm64"}},
		"imageTypes":    map[string]any{"type": "include", "values": []any{"application/vnd.oci.image.manifest.v1+json"}},
		"artifactTypes": map[string]any{"type": "exclude", "values": []any{"application/vnd.cncf.notary.signature"}},
	}
	if got := get(m, "properties.artifactSyncFilters"); !reflect.DeepEqual(got, want) {
		t.Errorf("artifactSyncFilters = %v\nwant %v", got, want)
	}

	// PATCH merges: platforms replaced, the other filters kept; identity removed.
	r := f.do(http.MethodPatch, p, map[string]any{"identity": map[string]any{"type": "None"},
		"properties": map[string]any{"artifactSyncFilters": map[string]any{"platforms": map[string]any{"type": "array", "values": []any{"linux/arm64"}}}}})
	mustStatus(t, "patch", r, http.StatusCreated)
	m = f.do(http.MethodGet, p, nil).json(t)
	if m["identity"] != nil || get(m, "properties.artifactSyncFilters.tags.query") != "Tags | where Name startswith 'v1';" ||
		!reflect.DeepEqual(get(m, "properties.artifactSyncFilters.platforms.values"), []any{"linux/arm64"}) {
		t.Errorf("after PATCH: %v", m)
	}

	// A PUT on the GA version replaces only what that version has: the
	// sync settings it cannot see stay.
	mustStatus(t, "GA replace", f.do(http.MethodPut, p+"?api-version=2023-07-01",
		ruleBody("upstream.azurecr.io/team/*", "team/*", "")), http.StatusOK)
	m = f.do(http.MethodGet, p, nil).json(t)
	if get(m, "properties.syncMode") != "ActiveSync" || get(m, "properties.artifactSyncFilters.tags") == nil {
		t.Errorf("GA PUT lost preview properties: %v", m["properties"])
	}
	// A preview PUT without them resets them.
	mustStatus(t, "preview replace", f.do(http.MethodPut, p, ruleBody("upstream.azurecr.io/team/*", "team/*", "")), http.StatusOK)
	m = f.do(http.MethodGet, p, nil).json(t)
	if get(m, "properties.syncMode") != "PassiveSync" || get(m, "properties.artifactSyncFilters") != nil || get(m, "properties.syncReferrers") != nil {
		t.Errorf("preview PUT kept old sync settings: %v", m["properties"])
	}
	// PATCH with artifactSyncFilters null on an ActiveSync rule clears them.
	mustStatus(t, "activate", f.do(http.MethodPatch, p, map[string]any{"properties": map[string]any{"syncMode": "ActiveSync",
		"artifactSyncFilters": map[string]any{"tags": map[string]any{"type": "kql", "query": "Tags"}}}}), http.StatusCreated)
	mustStatus(t, "clear filters", f.do(http.MethodPatch, p, map[string]any{"properties": map[string]any{"artifactSyncFilters": nil}}), http.StatusCreated)
	if m = f.do(http.MethodGet, p, nil).json(t); get(m, "properties.artifactSyncFilters") != nil || get(m, "properties.syncMode") != "ActiveSync" {
		t.Errorf("after clearing filters: %v", m["properties"])
	}
}

func TestCredentialSetShapes(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.TenantID = "tenant-1" })
	p := base("default") + "/credentialSets/MyDockerHubCredSet"
	r := f.do(http.MethodPut, p, credSetBody("docker.io", "https://MyKeyvault.vault.azure.net/secrets/usernamesecret", "https://MyKeyvault.vault.azure.net/secrets/passwordsecret"))
	mustStatus(t, "create", r, http.StatusCreated)
	m := r.json(t)
	principal, _ := get(m, "identity.principalId").(string)
	if len(principal) != 36 || get(m, "identity.tenantId") != "tenant-1" || get(m, "identity.type") != "systemAssigned" ||
		m["type"] != typeCredentialSet || get(m, "properties.provisioningState") != "Creating" || get(m, "properties.loginServer") != "docker.io" {
		t.Fatalf("create: %s", r.body)
	}
	cred := get(m, "properties.authCredentials").([]any)[0].(map[string]any)
	if cred["name"] != "Credential1" || get(cred, "credentialHealth.status") != "Unhealthy" || get(cred, "credentialHealth.errorCode") != "NotChecked" {
		t.Fatalf("credential: %v", cred)
	}
	// PATCH one identifier: the other stays, the identity is stable.
	r = f.do(http.MethodPatch, p, map[string]any{"properties": map[string]any{"authCredentials": []any{
		map[string]any{"name": "Credential1", "passwordSecretIdentifier": "https://MyKeyvault.vault.azure.net/secrets/newsecretname"}}}})
	mustStatus(t, "patch", r, http.StatusCreated)
	m = f.do(http.MethodGet, base("default")+"/credentialSets/mydockerhubcredset", nil).json(t)
	cred = get(m, "properties.authCredentials").([]any)[0].(map[string]any)
	if m["name"] != "MyDockerHubCredSet" || get(m, "identity.principalId") != principal ||
		cred["usernameSecretIdentifier"] != "https://MyKeyvault.vault.azure.net/secrets/usernamesecret" ||
		cred["passwordSecretIdentifier"] != "https://MyKeyvault.vault.azure.net/secrets/newsecretname" {
		t.Fatalf("after patch: %v", m)
	}
	// A replacing PUT keeps the identity too.
	mustStatus(t, "replace", f.do(http.MethodPut, p, credSetBody("docker.io", "env://U", "env://P")), http.StatusOK)
	if m = f.do(http.MethodGet, p, nil).json(t); get(m, "identity.principalId") != principal {
		t.Fatalf("principalId changed on replace: %v", m["identity"])
	}
}

// FuzzHandler sends arbitrary methods, paths and bodies: the handler must
// never panic, and every error must be an ARM error body.
func FuzzHandler(f *testing.F) {
	for _, s := range [][3]string{
		{"PUT", base("default") + "/cacheRules/myrule1?api-version=2025-09-01-preview", `{"properties":{"sourceRepository":"quay.io/a/*","targetRepository":"a/*"}}`},
		{"PATCH", base("default") + "/cacheRules/myrule1?api-version=2025-09-01-preview", `{"properties":{"credentialSetResourceId":null,"artifactSyncFilters":{"tags":null}}}`},
		{"PUT", base("default") + "/credentialSets/creds?api-version=2023-07-01", `{"properties":{"loginServer":"docker.io","authCredentials":[{}]}}`},
		{"GET", base("default") + "/cacheRules?api-version=2023-07-01&$skipToken=%00", ``},
		{"DELETE", "/subscriptions/x/providers/Microsoft.ContainerRegistry/locations/l/operationResults/..?api-version=2023-07-01", ``},
		{"PUT", base("default") + "/cacheRules/myrule1?api-version=2025-09-01-preview", `{"identity":{"type":"userassigned","userAssignedIdentities":{"":null}},"properties":[]}`},
	} {
		f.Add(s[0], s[1], s[2])
	}
	fx := newFixture(f)
	h := fx.srv.Config.Handler
	f.Fuzz(func(t *testing.T, method, target, body string) {
		if !strings.HasPrefix(target, "/") || strings.ContainsAny(method, " \t\r\n") || method == "" {
			return
		}
		req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/", strings.NewReader(body))
		req.Method = method
		u, err := req.URL.Parse(target)
		if err != nil {
			return
		}
		req.URL = u
		req.Header.Set("Authorization", "Bearer "+testToken)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 400 {
			var e errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Error.Code == "" || e.Error.Message == "" {
				t.Fatalf("%s %s: %d with a non-ARM error body %q", method, target, rec.Code, rec.Body.String())
			}
			if rec.Code >= 500 && rec.Code != http.StatusNotImplemented {
				t.Fatalf("%s %s: %d %s", method, target, rec.Code, rec.Body.String())
			}
		}
	})
}
