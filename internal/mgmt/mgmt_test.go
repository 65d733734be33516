package mgmt

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestAuthentication(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		auth, code string
	}{
		{"", "AuthenticationFailed"},
		{"Basic dXNlcjpwYXNz", "AuthenticationFailed"},
		{"Bearer", "AuthenticationFailed"},
		{"Bearer wrong-token", "InvalidAuthenticationToken"},
		{"bearer " + testToken + "x", "InvalidAuthenticationToken"},
	} {
		for _, path := range []string{base("default") + "/cacheRules", "/arca/v1/info", "/subscriptions/other/anything"} {
			r := f.doAuth(http.MethodGet, path, nil, tc.auth)
			if r.status != http.StatusUnauthorized || r.errorCode() != tc.code || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s with %q: %d %s, want 401 %s", path, tc.auth, r.status, r.body, tc.code)
			}
		}
	}
	// Writes are refused too, and nothing is written.
	r := f.doAuth(http.MethodPut, base("default")+"/cacheRules/anon1", ruleBody("mcr.microsoft.com/hello-world", "hello", ""), "")
	mustStatus(t, "anonymous PUT", r, http.StatusUnauthorized)
	if got := f.do(http.MethodGet, base("default")+"/cacheRules/anon1", nil); got.status != http.StatusNotFound {
		t.Fatalf("anonymous PUT wrote a rule: %d %s", got.status, got.body)
	}
	if r := f.doAuth(http.MethodGet, "/arca/v1/info", nil, "bearer "+testToken); r.status != http.StatusOK {
		t.Fatalf("scheme is case-insensitive: %d", r.status)
	}
}

func TestInfo(t *testing.T) {
	f := newFixture(t)
	r := f.do(http.MethodGet, "/arca/v1/info", nil)
	mustStatus(t, "info", r, http.StatusOK)
	want := `{"subscriptionId":"` + testSub + `","resourceGroup":"arca-rg","defaultRegistry":"default","registries":[{"name":"default","hosts":[]},{"name":"teamreg","hosts":["team.example.com"]}]}`
	if string(r.body) != want {
		t.Fatalf("info = %s\nwant   %s", r.body, want)
	}
	if r := f.do(http.MethodPost, "/arca/v1/info", "{}"); r.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST info: %d", r.status)
	}
}

func TestAPIVersions(t *testing.T) {
	f := newFixture(t)
	p := base("default") + "/cacheRules"
	for _, tc := range []struct {
		query  string
		status int
		code   string
	}{
		{"", 400, "MissingApiVersionParameter"},
		{"?api-version=", 400, "MissingApiVersionParameter"},
		{"?api-version=latest", 400, "InvalidApiVersionParameter"},
		{"?api-version=2023-13-01x", 400, "InvalidApiVersionParameter"},
		{"?api-version=2019-05-01", 400, "NoRegisteredProviderFound"},
		{"?api-version=2099-01-01-preview", 400, "NoRegisteredProviderFound"},
		{"?api-version=2023-07-01", 200, ""},
		{"?api-version=2025-09-01-preview", 200, ""},
		{"?api-version=2026-01-01-preview", 200, ""},
		{"?api-version=2025-11-01", 200, ""},
		{"?api-version=2024-01-01-PREVIEW", 200, ""},
	} {
		// An absolute URL: the helper adds no api-version of its own.
		r := f.doAuth(http.MethodGet, f.srv.URL+p+tc.query, nil, "Bearer "+testToken)
		if r.status != tc.status || r.errorCode() != tc.code {
			t.Errorf("%q: %d %s, want %d %s", tc.query, r.status, r.body, tc.status, tc.code)
		}
		if tc.code == "NoRegisteredProviderFound" && !strings.Contains(r.errorMessage(), "2023-07-01") {
			t.Errorf("%q: message does not list supported versions: %s", tc.query, r.errorMessage())
		}
	}
}

func TestNotFoundPaths(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		path string
		code string
	}{
		{"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/" + testRG + "/providers/Microsoft.ContainerRegistry/registries/default/cacheRules", "SubscriptionNotFound"},
		{"/subscriptions/" + testSub + "/resourceGroups/otherrg/providers/Microsoft.ContainerRegistry/registries/default/cacheRules", "ResourceGroupNotFound"},
		{base("nosuchreg") + "/cacheRules", "ResourceNotFound"},
		{base("default") + "/webhooks", "InvalidResourceType"},
		{base("default") + "/cacheRules/myrule/extra", "InvalidResourceType"},
		{"/subscriptions/" + testSub + "/resourceGroups/" + testRG + "/providers/Microsoft.Storage/storageAccounts/x", "InvalidResourceType"},
		{base("default") + "/cacheRules/nosuchrule", "ResourceNotFound"},
		{base("default") + "/credentialSets/nosuchset", "ResourceNotFound"},
		{base("default") + "/cacheRules/nosuchrule/operationStatuses/cacherules-123", "ResourceNotFound"},
		{"/subscriptions/" + testSub + "/providers/Microsoft.ContainerRegistry/locations/local/operationResults/nope", "ResourceNotFound"},
	} {
		r := f.do(http.MethodGet, tc.path, nil)
		if r.status != http.StatusNotFound || r.errorCode() != tc.code {
			t.Errorf("GET %s: %d %s, want 404 %s", tc.path, r.status, r.body, tc.code)
		}
	}
	r := f.do(http.MethodGet, base("default")+"/cacheRules/nosuchrule", nil)
	if m := r.json(t); m["status"] != "Failed" || r.errorMessage() != "The cache rule nosuchrule could not be found." {
		t.Errorf("404 body = %s, want ACR's message and status Failed", r.body)
	}
	// Path segments and names ignore case, as in ARM.
	upper := strings.ReplaceAll(base("DEFAULT"), "resourceGroups", "RESOURCEGROUPS") + "/CACHERULES"
	mustStatus(t, "upper-case path", f.do(http.MethodGet, upper, nil), http.StatusOK)
	mustStatus(t, "estimate", f.do(http.MethodPost, base("default")+"/checkCacheRuleArtifactSyncEstimate", "{}"), http.StatusNotImplemented)
	mustStatus(t, "POST on a rule", f.do(http.MethodPost, base("default")+"/cacheRules/myrule1", "{}"), http.StatusMethodNotAllowed)
	mustStatus(t, "sync of a missing rule", f.do(http.MethodPost, base("default")+"/cacheRules/myrule1/sync", `{"tag":"1"}`), http.StatusNotFound)
	mustStatus(t, "create", f.do(http.MethodPut, base("default")+"/cacheRules/myrule1", ruleBody("quay.io/a/b", "b", "")), http.StatusCreated)
	if r := f.do(http.MethodPost, base("default")+"/cacheRules/myrule1/sync", `{"tag":"1"}`); r.status != http.StatusNotImplemented || r.errorCode() != "NotImplemented" {
		t.Errorf("sync: %d %s", r.status, r.body)
	}
	mustStatus(t, "registry GET", f.do(http.MethodGet, base("teamreg"), nil), http.StatusOK)
}

// TestCacheRuleLifecycle walks the ARM protocol by hand: status codes,
// LRO headers and documents, envelopes.
func TestCacheRuleLifecycle(t *testing.T) {
	f := newFixture(t)
	p := base("default") + "/cacheRules/Hello-World"

	r := f.do(http.MethodPut, p, ruleBody("mcr.microsoft.com/hello-world", "hello-world", ""))
	mustStatus(t, "create", r, http.StatusCreated)
	m := r.json(t)
	props := m["properties"].(map[string]any)
	if m["id"] != base("default")+"/cacheRules/Hello-World" || m["name"] != "Hello-World" || m["type"] != typeCacheRule ||
		props["provisioningState"] != "Creating" || props["sourceRepository"] != "mcr.microsoft.com/hello-world" ||
		props["creationDate"] == "" || m["systemData"].(map[string]any)["createdByType"] != "Key" || props["syncMode"] != "PassiveSync" {
		t.Fatalf("create body: %s", r.body)
	}
	if _, has := props["credentialSetResourceId"]; has {
		t.Fatalf("credentialSetResourceId should be omitted: %s", r.body)
	}
	aao := r.header.Get("Azure-AsyncOperation")
	if !strings.HasPrefix(aao, f.srv.URL+base("default")+"/cacheRules/Hello-World/operationStatuses/cacherules-") ||
		!strings.Contains(aao, "api-version=2025-09-01-preview") || r.header.Get("Location") != "" {
		t.Fatalf("Azure-AsyncOperation = %q, Location = %q", aao, r.header.Get("Location"))
	}
	st := f.do(http.MethodGet, aao, nil)
	mustStatus(t, "operation status", st, http.StatusOK)
	if doc := st.json(t); doc["status"] != "Succeeded" || doc["startTime"] == "" || doc["endTime"] == "" {
		t.Fatalf("operation document: %s", st.body)
	}
	// The operation is only visible under its own resource.
	other := strings.Replace(aao, "/Hello-World/", "/Other-Rule/", 1)
	mustStatus(t, "operation under another rule", f.do(http.MethodGet, other, nil), http.StatusNotFound)

	g := f.do(http.MethodGet, base("default")+"/cacheRules/hello-world", nil)
	mustStatus(t, "get", g, http.StatusOK)
	if gm := g.json(t); gm["name"] != "Hello-World" || gm["properties"].(map[string]any)["provisioningState"] != "Succeeded" {
		t.Fatalf("get body: %s", g.body)
	}

	r = f.do(http.MethodPut, p, ruleBody("mcr.microsoft.com/hello-world", "hello-world", ""))
	mustStatus(t, "replace", r, http.StatusOK)
	if r.header.Get("Azure-AsyncOperation") != "" || r.json(t)["properties"].(map[string]any)["provisioningState"] != "Succeeded" {
		t.Fatalf("replace: %v %s", r.header, r.body)
	}

	r = f.do(http.MethodPatch, p, map[string]any{"properties": map[string]any{"syncMode": "activesync", "syncReferrers": "enabled"}})
	mustStatus(t, "patch", r, http.StatusCreated)
	pp := r.json(t)["properties"].(map[string]any)
	if pp["provisioningState"] != "Updating" || pp["syncMode"] != "ActiveSync" || pp["syncReferrers"] != "Enabled" || r.header.Get("Azure-AsyncOperation") == "" {
		t.Fatalf("patch: %s", r.body)
	}
	// On the GA api-version the preview properties are not shown.
	g = f.do(http.MethodGet, p+"?api-version=2023-07-01", nil)
	if strings.Contains(string(g.body), "syncMode") {
		t.Fatalf("GA GET shows preview properties: %s", g.body)
	}

	r = f.do(http.MethodDelete, p, nil)
	mustStatus(t, "delete", r, http.StatusAccepted)
	loc := r.header.Get("Location")
	if !strings.HasPrefix(loc, f.srv.URL+"/subscriptions/"+testSub+"/providers/Microsoft.ContainerRegistry/locations/local/operationResults/cacherules-") || len(r.body) != 0 {
		t.Fatalf("delete Location = %q body %q", loc, r.body)
	}
	res := f.do(http.MethodGet, loc, nil)
	if res.status != http.StatusOK || len(res.body) != 0 {
		t.Fatalf("operation result: %d %q", res.status, res.body)
	}
	mustStatus(t, "delete again", f.do(http.MethodDelete, p, nil), http.StatusNoContent)
	mustStatus(t, "get deleted", f.do(http.MethodGet, p, nil), http.StatusNotFound)
	mustStatus(t, "patch absent", f.do(http.MethodPatch, p, map[string]any{"properties": map[string]any{}}), http.StatusNotFound)

	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.changes) != 4 { // create, replace, patch, delete
		t.Fatalf("OnChange calls = %v", f.changes)
	}
}

func TestListPaging(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.PageSize = 2 })
	for i := range 5 {
		r := f.do(http.MethodPut, fmt.Sprintf("%s/cacheRules/rule%d0", base("default"), i), ruleBody(fmt.Sprintf("quay.io/org/app%d", i), fmt.Sprintf("app%d", i), ""))
		mustStatus(t, "create", r, http.StatusCreated)
	}
	var names []string
	next := base("default") + "/cacheRules"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		r := f.do(http.MethodGet, next, nil)
		mustStatus(t, "list", r, http.StatusOK)
		m := r.json(t)
		for _, v := range m["value"].([]any) {
			names = append(names, v.(map[string]any)["name"].(string))
		}
		next, _ = m["nextLink"].(string)
		if next != "" {
			if u, err := url.Parse(next); err != nil || !u.IsAbs() || u.Query().Get("api-version") == "" {
				t.Fatalf("nextLink %q", next)
			}
		}
	}
	if strings.Join(names, ",") != "rule00,rule10,rule20,rule30,rule40" {
		t.Fatalf("listed %v", names)
	}
	r := f.do(http.MethodGet, base("teamreg")+"/cacheRules", nil)
	if string(r.body) != `{"value":[]}` {
		t.Fatalf("other registry's list: %s", r.body)
	}
}

func TestExternalURL(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.ExternalURL = "https://arca.example.com:8443/" })
	r := f.do(http.MethodPut, base("default")+"/cacheRules/hello", ruleBody("mcr.microsoft.com/hello-world", "hello-world", ""))
	mustStatus(t, "create", r, http.StatusCreated)
	if aao := r.header.Get("Azure-AsyncOperation"); !strings.HasPrefix(aao, "https://arca.example.com:8443/subscriptions/") {
		t.Fatalf("Azure-AsyncOperation = %q", aao)
	}
}
