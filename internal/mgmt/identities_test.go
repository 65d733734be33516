package mgmt

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/armtime"
)

func withIdentities(o *Options) { o.Identities = o.Store.(IdentityStore) }

// The identity, federated credential and role assignment resources: shapes
// and the validation rules, one call each.
func TestIdentityResources(t *testing.T) {
	f := newFixture(t, withIdentities)
	idPath := "/subscriptions/" + testSub + "/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cacheid"
	r := f.do(http.MethodPut, idPath, map[string]any{"location": "westeurope"})
	mustStatus(t, "identity create", r, http.StatusCreated)
	id := r.json(t)
	props, _ := id["properties"].(map[string]any)
	principal, _ := props["principalId"].(string)
	if id["id"] != idPath || id["type"] != "Microsoft.ManagedIdentity/userAssignedIdentities" || len(principal) != 36 || len(props["clientId"].(string)) != 36 {
		t.Fatalf("identity: %v", id)
	}
	// PUT again keeps the ids.
	if again := f.do(http.MethodPut, idPath, map[string]any{}).json(t); again["properties"].(map[string]any)["principalId"] != principal {
		t.Fatalf("re-PUT changed the principal id: %v", again)
	}
	reg := base("default")
	for _, tc := range []struct {
		what, method, path string
		body               any
		status             int
		code               string
	}{
		{"bad identity name", http.MethodPut, strings.Replace(idPath, "cacheid", "x", 1), map[string]any{}, 400, "InvalidResourceName"},
		{"fic http issuer off loopback", http.MethodPut, idPath + "/federatedIdentityCredentials/fic1",
			map[string]any{"properties": map[string]any{"issuer": "http://oidc.example.com", "subject": "s"}}, 400, "BadRequest"},
		{"fic without subject", http.MethodPut, idPath + "/federatedIdentityCredentials/fic1",
			map[string]any{"properties": map[string]any{"issuer": "https://oidc.example.com"}}, 400, "BadRequest"},
		{"fic two audiences", http.MethodPut, idPath + "/federatedIdentityCredentials/fic1",
			map[string]any{"properties": map[string]any{"issuer": "https://oidc.example.com", "subject": "s", "audiences": []string{"a", "b"}}}, 400, "BadRequest"},
		{"fic of a missing identity", http.MethodPut, strings.Replace(idPath, "cacheid", "nobody", 1) + "/federatedIdentityCredentials/fic1",
			map[string]any{"properties": map[string]any{"issuer": "https://oidc.example.com", "subject": "s"}}, 404, "ResourceNotFound"},
		{"fic ok", http.MethodPut, idPath + "/federatedIdentityCredentials/fic1",
			map[string]any{"properties": map[string]any{"issuer": "https://oidc.example.com", "subject": "s"}}, 201, ""},
		{"role: AcrPull on a repository", http.MethodPut, reg + "/repositories/myapp/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
			roleBody("7f951dda-4ed3-4680-a7ca-43fe172d538d", principal), 400, "InvalidRoleAssignmentRequest"},
		{"role: unknown principal", http.MethodPut, reg + "/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
			roleBody("7f951dda-4ed3-4680-a7ca-43fe172d538d", "0b7a6f0e-0000-4000-8000-0000000000ff"), 400, "PrincipalNotFound"},
		{"role: name not a GUID", http.MethodPut, reg + "/providers/Microsoft.Authorization/roleAssignments/x",
			roleBody("7f951dda-4ed3-4680-a7ca-43fe172d538d", principal), 400, "InvalidRoleAssignmentId"},
		{"role: unsupported condition attribute", http.MethodPut, reg + "/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
			conditionBody("b93aa761-3e63-49ed-ac28-beffa264f7ac", principal, "@Request[x] StringEquals 'y'", ""), 400, "InvalidRoleAssignmentCondition"},
		{"role: condition version 1.0", http.MethodPut, reg + "/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
			conditionBody("b93aa761-3e63-49ed-ac28-beffa264f7ac", principal, teamACondition, "1.0"), 400, "InvalidRoleAssignmentCondition"},
		{"role: condition on a legacy role", http.MethodPut, reg + "/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
			conditionBody("7f951dda-4ed3-4680-a7ca-43fe172d538d", principal, teamACondition, "2.0"), 400, "InvalidRoleAssignmentCondition"},
		{"role: conditioned reader", http.MethodPut, reg + "/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000003",
			conditionBody("b93aa761-3e63-49ed-ac28-beffa264f7ac", principal, teamACondition, ""), 201, ""},
		{"role: repository reader", http.MethodPut, reg + "/repositories/myapp/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
			roleBody("/subscriptions/"+testSub+"/providers/Microsoft.Authorization/roleDefinitions/b93aa761-3e63-49ed-ac28-beffa264f7ac", principal), 201, ""},
		{"role: the same again", http.MethodPut, reg + "/repositories/myapp/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000002",
			roleBody("b93aa761-3e63-49ed-ac28-beffa264f7ac", principal), 409, "RoleAssignmentExists"},
	} {
		r := f.do(tc.method, tc.path, tc.body)
		if r.status != tc.status || (tc.code != "" && r.errorCode() != tc.code) {
			t.Errorf("%s: %d %s, want %d %s: %s", tc.what, r.status, r.errorCode(), tc.status, tc.code, r.body)
		}
	}
	list := f.do(http.MethodGet, "/subscriptions/"+testSub+"/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'"+principal+"'", nil).json(t)
	v, _ := list["value"].([]any)
	if len(v) != 2 {
		t.Fatalf("role assignment list: %v", list)
	}
	var scopes []string
	for _, a := range v {
		p := a.(map[string]any)["properties"].(map[string]any)
		scopes = append(scopes, p["scope"].(string))
		switch {
		case strings.HasSuffix(p["scope"].(string), "/repositories/myapp"):
			if p["condition"] != nil || p["conditionVersion"] != nil {
				t.Errorf("unconditioned assignment shows %v / %v", p["condition"], p["conditionVersion"])
			}
		case p["condition"] != teamACondition || p["conditionVersion"] != "2.0":
			t.Errorf("conditioned assignment shows %v / %v", p["condition"], p["conditionVersion"])
		}
	}
	if !strings.HasSuffix(scopes[0], "/repositories/myapp") && !strings.HasSuffix(scopes[1], "/repositories/myapp") {
		t.Fatalf("role assignment scopes: %v", scopes)
	}
	mustStatus(t, "identity delete", f.do(http.MethodDelete, idPath, nil), http.StatusOK)
	mustStatus(t, "identity show after delete", f.do(http.MethodGet, idPath, nil), http.StatusNotFound)
	mustStatus(t, "fic list after delete", f.do(http.MethodGet, idPath+"/federatedIdentityCredentials", nil), http.StatusNotFound)
}

const teamACondition = "@Resource[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team-a/'"

func conditionBody(role, principal, cond, version string) map[string]any {
	return map[string]any{"properties": map[string]any{"roleDefinitionId": role, "principalId": principal, "condition": cond, "conditionVersion": version}}
}

func roleBody(role, principal string) map[string]any {
	return map[string]any{"properties": map[string]any{"roleDefinitionId": role, "principalId": principal}}
}

// resetCredential returns a new client secret once; the identity then
// shows when it was set, never the secret; only POST is served.
func TestIdentityResetCredential(t *testing.T) {
	f := newFixture(t, withIdentities)
	idPath := "/subscriptions/" + testSub + "/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/spid"
	mustStatus(t, "identity create", f.do(http.MethodPut, idPath, map[string]any{}), http.StatusCreated)
	r := f.do(http.MethodPost, idPath+"/resetCredential", nil)
	mustStatus(t, "reset", r, http.StatusOK)
	m := r.json(t)
	secret, _ := m["clientSecret"].(string)
	if len(secret) < 40 || m["clientId"] == "" || r.header.Get("Cache-Control") != "no-store" {
		t.Fatalf("reset answer: %v (Cache-Control %q)", m, r.header.Get("Cache-Control"))
	}
	again := f.do(http.MethodPost, idPath+"/resetCredential", nil).json(t)
	if again["clientSecret"] == secret {
		t.Fatal("a second reset returned the same secret")
	}
	show := f.do(http.MethodGet, idPath, nil)
	if strings.Contains(string(show.body), secret) || get(show.json(t), "properties.clientSecretCreatedDateTime") == nil {
		t.Fatalf("identity after reset: %s", show.body)
	}
	mustStatus(t, "GET resetCredential", f.do(http.MethodGet, idPath+"/resetCredential", nil), http.StatusMethodNotAllowed)
	mustStatus(t, "reset of a missing identity", f.do(http.MethodPost, strings.Replace(idPath, "spid", "nobody", 1)+"/resetCredential", nil), http.StatusNotFound)
}

// A reset secret ends a year from now unless the body's endDateTime says
// otherwise; an end not in the future, or not a time, is refused. The
// identity shows the end.
func TestIdentityResetCredentialEnd(t *testing.T) {
	f := newFixture(t, withIdentities)
	idPath := "/subscriptions/" + testSub + "/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/spid"
	mustStatus(t, "identity create", f.do(http.MethodPut, idPath, map[string]any{}), http.StatusCreated)
	later := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
		end    func(created time.Time) time.Time
	}{
		{"no body", nil, http.StatusOK, "", func(c time.Time) time.Time { return c.AddDate(1, 0, 0) }},
		{"no endDateTime", map[string]any{}, http.StatusOK, "", func(c time.Time) time.Time { return c.AddDate(1, 0, 0) }},
		{"endDateTime", map[string]any{"endDateTime": later.Format(time.RFC3339)}, http.StatusOK, "", func(time.Time) time.Time { return later }},
		{"in the past", map[string]any{"endDateTime": "2020-01-01T00:00:00Z"}, http.StatusBadRequest, "InvalidCredentialEndDate", nil},
		{"not a time", map[string]any{"endDateTime": "next year"}, http.StatusBadRequest, "InvalidRequestContent", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := f.do(http.MethodPost, idPath+"/resetCredential", tc.body)
			mustStatus(t, "reset", r, tc.status)
			m := r.json(t)
			if tc.status != http.StatusOK {
				if got := get(m, "error.code"); got != tc.code {
					t.Fatalf("error %v, want %s", m, tc.code)
				}
				return
			}
			created, err1 := time.Parse(time.RFC3339, fmt.Sprint(m["createdDateTime"]))
			end, err2 := time.Parse(time.RFC3339, fmt.Sprint(m["endDateTime"]))
			if err1 != nil || err2 != nil || !end.Equal(tc.end(created)) {
				t.Fatalf("answer %v: end %v, want %v", m, end, tc.end(created))
			}
			if got := get(f.do(http.MethodGet, idPath, nil).json(t), "properties.clientSecretEndDateTime"); got != armtime.Format(end) {
				t.Errorf("identity's clientSecretEndDateTime %v, want %s", got, armtime.Format(end))
			}
		})
	}
}
