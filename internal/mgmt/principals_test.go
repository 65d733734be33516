package mgmt

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/auth"
)

// newPrincipalToken creates a principal through the API and returns its token.
func (f *fixture) newPrincipalToken(name, role, registry string) string {
	f.t.Helper()
	r := f.do("PUT", "/arca/v1/principals/"+name, map[string]any{"role": role, "registry": registry})
	if r.status != 200 {
		f.t.Fatalf("create principal %s: %d %s", name, r.status, r.body)
	}
	tok, _ := r.json(f.t.(*testing.T))["token"].(string)
	if !strings.HasPrefix(tok, principalTokenPrefix+name+"_") {
		f.t.Fatalf("principal token %q", tok)
	}
	return tok
}

func TestManagementRoles(t *testing.T) {
	f := newFixture(t)
	tokens := map[string]string{}
	for _, p := range []struct{ name, role, reg string }{
		{"owner1", RoleOwner, ""}, {"contrib", RoleContributor, ""}, {"reader", RoleReader, ""},
		{"ci-rules", RoleContributor, "teamreg"}, {"puller", RoleAcrPull, ""},
	} {
		tokens[p.name] = "Bearer " + f.newPrincipalToken(p.name, p.role, p.reg)
	}
	rule := ruleBody("mcr.microsoft.com/dotnet/runtime", "dotnet/runtime", "")
	cases := []struct {
		who, method, path string
		body              any
		want              int
	}{
		{"reader", "GET", base("default") + "/cacheRules", nil, 200},
		{"reader", "PUT", base("default") + "/cacheRules/rule1", rule, 403},
		{"reader", "POST", base("default") + "/listCredentials", nil, 403},                                       // secrets need write
		{"reader", "POST", base("default") + "/listKeyVaultSecrets", map[string]any{"keyVault": "myvault"}, 403}, // as creating credential sets
		{"ci-rules", "POST", base("default") + "/listKeyVaultSecrets", map[string]any{"keyVault": "myvault"}, 403},
		{"contrib", "PUT", base("default") + "/cacheRules/rule1", rule, 201},
		{"contrib", "GET", "/arca/v1/principals", nil, 403},
		{"contrib", "GET", "/arca/v1/audit", nil, 403},
		{"contrib", "GET", "/arca/v1/backup/metadata", nil, 403}, // the whole store, secret hashes included
		{"ci-rules", "GET", "/arca/v1/backup/metadata", nil, 403},
		{"owner1", "GET", "/arca/v1/principals", nil, 200},
		{"ci-rules", "PUT", base("teamreg") + "/cacheRules/rule2", rule, 201},
		{"ci-rules", "PUT", base("default") + "/cacheRules/rule3", rule, 403},
		{"ci-rules", "GET", base("default"), nil, 403},
		{"puller", "GET", base("default") + "/cacheRules", nil, 403},
		{"puller", "GET", "/arca/v1/info", nil, 200},
	}
	for _, c := range cases {
		r := f.doAuth(c.method, c.path, c.body, tokens[c.who])
		if r.status != c.want {
			t.Errorf("%s %s %s: %d, want %d (%s)", c.who, c.method, c.path, r.status, c.want, r.body)
		}
		if c.want == 403 && r.errorCode() != "AuthorizationFailed" {
			t.Errorf("%s %s %s: code %q", c.who, c.method, c.path, r.errorCode())
		}
	}
	// A registry-scoped caller sees only its registry.
	r := f.doAuth("GET", "/subscriptions/"+testSub+"/providers/Microsoft.ContainerRegistry/registries", nil, tokens["ci-rules"])
	if v, _ := r.json(t)["value"].([]any); len(v) != 1 {
		t.Errorf("scoped list: %s", r.body)
	}
	// Deleted principals stop working at once.
	if r := f.do("DELETE", "/arca/v1/principals/reader", nil); r.status != 200 {
		t.Fatalf("delete: %d", r.status)
	}
	if r := f.doAuth("GET", base("default")+"/cacheRules", nil, tokens["reader"]); r.status != 401 {
		t.Errorf("deleted principal: %d", r.status)
	}
	// The audit log has who did what, never a token.
	r = f.do("GET", "/arca/v1/audit", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"who":"contrib"`) || !strings.Contains(string(r.body), "/cacheRules/rule1") {
		t.Fatalf("audit: %d %s", r.status, r.body)
	}
	for _, tok := range tokens {
		if strings.Contains(string(r.body), strings.TrimPrefix(tok, "Bearer ")) {
			t.Fatal("audit log holds a token")
		}
	}
	if strings.Contains(f.logs.String(), strings.TrimPrefix(tokens["owner1"], "Bearer ")) {
		t.Fatal("server log holds a token")
	}
}

func TestManagementAuthThrottled(t *testing.T) {
	f := newFixture(t)
	for i := 0; i < 10; i++ {
		if r := f.doAuth("GET", base("default"), nil, "Bearer wrong-token"); r.status != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, r.status)
		}
	}
	// Over budget: refused without checking, even the right token.
	if r := f.do("GET", base("default"), nil); r.status != http.StatusTooManyRequests || r.errorCode() != "TooManyRequests" {
		t.Fatalf("after 10 failures: %d %s", r.status, r.body)
	}
	list, err := f.meta.ListAudit(context.Background(), time.Time{}, 100)
	if err != nil || len(list) != 10 || list[0].Result != "invalid token" {
		t.Fatalf("audit of failures: %v %+v", err, list)
	}
}

// TestSessionPrincipals: an in-process call carrying a session principal
// (what the web portal keeps instead of the token) is the principal's;
// setting the same admin token again keeps its stamp (every replica sets
// it at start), a different token or a deleted principal ends the
// session, and a request with neither header nor context is refused.
func TestSessionPrincipals(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	p, err := NewPrincipals(f.meta, nil)
	if err != nil {
		t.Fatal(err)
	}
	call := func(name, stamp, path string) int {
		t.Helper()
		r := httptest.NewRequest(http.MethodGet, path, nil)
		if name != "" {
			r = r.WithContext(p.WithSession(r.Context(), name, stamp))
		}
		rec := httptest.NewRecorder()
		f.srv.Config.Handler.ServeHTTP(rec, r)
		return rec.Code
	}
	ops := f.newPrincipalToken("ops-1", RoleReader, "") // before the fixture's admin token is replaced
	tokA, tokB := "arca_"+mustSecret(t), "arca_"+mustSecret(t)
	if err := p.SetAdminToken(ctx, tokA); err != nil {
		t.Fatal(err)
	}
	name, stamp, ok, err := p.Identify(ctx, tokA)
	if err != nil || !ok || name != AdminPrincipal || strings.Contains(stamp, tokA) {
		t.Fatalf("Identify: %q %q %v %v", name, stamp, ok, err)
	}
	if _, _, ok, err := p.Identify(ctx, tokB); ok || err != nil {
		t.Fatalf("Identify of an unknown token: %v %v", ok, err)
	}
	if err := p.SetAdminToken(ctx, tokA); err != nil {
		t.Fatal(err)
	}
	if _, again, _, _ := p.Identify(ctx, tokA); again != stamp {
		t.Errorf("setting the same admin token changed its stamp")
	}
	_, opsStamp, _, _ := p.Identify(ctx, ops)
	for _, c := range []struct {
		name, stamp, path string
		want              int
	}{
		{AdminPrincipal, stamp, "/arca/v1/principals", 200},
		{"ops-1", opsStamp, "/arca/v1/info", 200},
		{"ops-1", opsStamp, "/arca/v1/principals", 403}, // the principal's role, not more
		{"ops-1", stamp, "/arca/v1/info", 401},          // another principal's stamp
		{"nobody", stamp, "/arca/v1/info", 401},
		{"", "", "/arca/v1/info", 401}, // no token, no session
	} {
		if got := call(c.name, c.stamp, c.path); got != c.want {
			t.Errorf("session %q on %s: %d, want %d", c.name, c.path, got, c.want)
		}
	}
	if err := p.SetAdminToken(ctx, tokB); err != nil {
		t.Fatal(err)
	}
	if got := call(AdminPrincipal, stamp, "/arca/v1/info"); got != 401 {
		t.Errorf("session of a replaced admin token: %d, want 401", got)
	}
	if err := f.meta.DeletePrincipal(ctx, "ops-1"); err != nil {
		t.Fatal(err)
	}
	if got := call("ops-1", opsStamp, "/arca/v1/info"); got != 401 {
		t.Errorf("session of a deleted principal: %d, want 401", got)
	}
}

func mustSecret(t *testing.T) string {
	t.Helper()
	s, err := auth.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	return s
}
