package auth

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/testutil/oidcfixture"
)

const testSub = DefaultSubscriptionID

func TestParseRoleScope(t *testing.T) {
	reg := "/subscriptions/" + testSub + "/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries/Reg01"
	for _, tc := range []struct {
		scope string
		want  RoleScope
		err   string
	}{
		{"/subscriptions/" + testSub, RoleScope{}, ""},
		{"/subscriptions/" + testSub + "/resourceGroups/arca", RoleScope{ResourceGroup: "arca"}, ""},
		{reg, RoleScope{ResourceGroup: "arca", Registry: "reg01"}, ""},
		{reg + "/repositories/myapp", RoleScope{"arca", "reg01", "myapp"}, ""},
		{reg + "/repositories/Team/App", RoleScope{"arca", "reg01", "team/app"}, ""},
		{reg + "/repositories/team/*", RoleScope{"arca", "reg01", "team/*"}, ""},
		{reg + "/repositories/*", RoleScope{"arca", "reg01", "*"}, ""},
		{reg + "/repositories/team*", RoleScope{}, "want a repository name"},
		{reg + "/repositories/a/*/b", RoleScope{}, "want a repository name"},
		{reg + "/repositories", RoleScope{}, "repositories/{repository}"},
		{reg + "/tokens/x", RoleScope{}, "repositories/{repository}"},
		{"/subscriptions/11111111-1111-1111-1111-111111111111", RoleScope{}, "not this deployment's"},
		{"/subscriptions/" + testSub + "/resourceGroups/arca/providers/Microsoft.Storage/storageAccounts/x", RoleScope{}, "Microsoft.ContainerRegistry"},
		{"registries/x", RoleScope{}, "want /subscriptions/"},
		{"", RoleScope{}, "want /subscriptions/"},
	} {
		got, err := ParseRoleScope(tc.scope, testSub)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err %v, want %q", tc.scope, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v %v, want %+v", tc.scope, got, err, tc.want)
		}
	}
}

func TestValidateRoleAssignment(t *testing.T) {
	reg := "/subscriptions/" + testSub + "/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries/reg01"
	for _, tc := range []struct{ role, scope, err string }{
		{"AcrPull", reg, ""},
		{"acrpush", reg, ""},
		{"/subscriptions/x/providers/Microsoft.Authorization/roleDefinitions/b93aa761-3e63-49ed-ac28-beffa264f7ac", reg + "/repositories/myapp", ""},
		{"Container Registry Repository Writer", reg + "/repositories/team/*", ""},
		{"AcrPull", reg + "/repositories/myapp", "applies to whole registries"},
		{"Owner", reg, "want one of"},
		{"Container Registry Repository Reader", "/nope", "want /subscriptions/"},
	} {
		_, _, err := ValidateRoleAssignment(tc.role, tc.scope, testSub)
		if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s at %s: %v, want %q", tc.role, tc.scope, err, tc.err)
		}
	}
}

func TestValidIssuer(t *testing.T) {
	for iss, ok := range map[string]bool{
		"https://token.actions.githubusercontent.com": true,
		"https://oidc.example.com/tenant/v2.0":        true,
		"http://127.0.0.1:5556/dex":                   true,
		"http://[::1]:80":                             true,
		"http://localhost:8080":                       true,
		"http://oidc.example.com":                     false,
		"http://10.0.0.1":                             false,
		"ftp://x":                                     false,
		"https://":                                    false,
		"https://user@x":                              false,
		"https://x?a=b":                               false,
		"not a url":                                   false,
	} {
		if err := ValidIssuer(iss); (err == nil) != ok {
			t.Errorf("%q: %v, want ok=%v", iss, err, ok)
		}
	}
}

// identityFixture is a service with identities, a loopback OIDC issuer, an
// identity with a federated credential for subject "ci" and the roles of
// seed 001 (plus AcrPush on the whole registry, which ABAC mode ignores).
type identityFixture struct {
	svc       *Service
	meta      metadata.Store
	iss       *oidcfixture.Issuer
	principal string
}

func newIdentityFixture(t *testing.T) *identityFixture {
	t.Helper()
	ctx := context.Background()
	_, meta := newTestService(t, nil)
	svc, err := New(Options{Store: meta, Identities: meta})
	if err != nil {
		t.Fatal(err)
	}
	f := &identityFixture{svc: svc, meta: meta, iss: oidcfixture.Start(t)}
	u, _, err := meta.PutIdentity(ctx, metadata.UserIdentity{ResourceGroup: "rg", Name: "cacheid", PrincipalID: "5b0c8f3e-0000-4000-8000-000000000001",
		ClientID: "5b0c8f3e-0000-4000-8000-000000000002", TenantID: testSub, Location: "local"})
	if err != nil {
		t.Fatal(err)
	}
	f.principal = u.PrincipalID
	if _, err := meta.PutFederatedCredential(ctx, metadata.FederatedCredential{ResourceGroup: "rg", Identity: "cacheid", Name: "ci",
		Issuer: f.iss.URL(), Subject: "ci", Audiences: []string{"api://AzureADTokenExchange"}}); err != nil {
		t.Fatal(err)
	}
	reg := "/subscriptions/" + testSub + "/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries/reg01"
	for i, a := range [][2]string{{"Container Registry Repository Reader", reg + "/repositories/myapp"}, {"AcrPush", reg}} {
		if _, _, err := meta.PutRoleAssignment(ctx, metadata.RoleAssignment{Name: "00000000-0000-4000-8000-00000000000" + string(rune('1'+i)),
			Role: a[0], PrincipalID: f.principal, Scope: a[1]}); err != nil {
			t.Fatal(err)
		}
	}
	f.setMode(t, ModeABAC)
	return f
}

func (f *identityFixture) setMode(t *testing.T, mode string) {
	t.Helper()
	if err := f.meta.UpdateRegistrySettings(context.Background(), "reg01", func(s *metadata.RegistrySettings) error {
		s.RoleAssignmentMode = mode
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func (f *identityFixture) post(t *testing.T, h http.Handler, form url.Values) (int, map[string]any) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://reg01.localhost/x", strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var m map[string]any
	_ = json.Unmarshal(w.Body.Bytes(), &m)
	return w.Code, m
}

func (f *identityFixture) exchange(t *testing.T, tok string) (int, string, map[string]any) {
	t.Helper()
	code, m := f.post(t, f.svc.ExchangeHandler(func(string) string { return "reg01" }),
		url.Values{"grant_type": {"access_token"}, "service": {"reg01.localhost"}, "access_token": {tok}})
	rt, _ := m["refresh_token"].(string)
	return code, rt, m
}

// grant asks the token endpoint for scope with a refresh token.
func (f *identityFixture) grant(t *testing.T, rt, scope string) (int, string) {
	t.Helper()
	code, m := f.post(t, f.svc.TokenHandler(func(string) string { return "reg01" }),
		url.Values{"grant_type": {"refresh_token"}, "service": {"reg01.localhost"}, "scope": {scope}, "refresh_token": {rt}})
	s, _ := m["scope"].(string)
	return code, s
}

func TestIdentityExchangeAndRoles(t *testing.T) {
	f := newIdentityFixture(t)
	code, rt, body := f.exchange(t, f.iss.Token(t, "ci", "api://AzureADTokenExchange", time.Hour))
	if code != 200 || !strings.HasPrefix(rt, refreshPrefix) {
		t.Fatalf("exchange: %d %v", code, body)
	}
	// ABAC mode: the repository role counts, AcrPush does not.
	for scope, want := range map[string]string{
		"repository:myapp:pull,push": "repository:myapp:pull",
		"repository:other:pull":      "",
	} {
		if code, got := f.grant(t, rt, scope); code != 200 || got != want {
			t.Errorf("ABAC %s: %d %q, want %q", scope, code, got, want)
		}
	}
	// Legacy mode: AcrPush on the registry counts, the repository role not.
	f.setMode(t, ModeLegacy)
	if code, got := f.grant(t, rt, "repository:other:pull,push"); code != 200 || got != "repository:other:pull,push" {
		t.Errorf("legacy other: %d %q", code, got)
	}
	f.setMode(t, ModeABAC)

	// Tokens the federated credential does not accept.
	for name, tok := range map[string]string{
		"wrong subject":  f.iss.Token(t, "someone-else", "api://AzureADTokenExchange", time.Hour),
		"wrong audience": f.iss.Token(t, "ci", "https://management.azure.com", time.Hour),
		"expired":        f.iss.Token(t, "ci", "api://AzureADTokenExchange", -time.Hour),
		"garbage":        "not.a.jwt",
	} {
		if code, _, body := f.exchange(t, tok); code != http.StatusUnauthorized {
			t.Errorf("%s: %d %v", name, code, body)
		}
	}
	// Claims the issuer would sign, signed with a key it does not publish
	// (under the kid of its own key): refused.
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forged := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.MapClaims{"iss": f.iss.URL(), "sub": "ci", "aud": "api://AzureADTokenExchange",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
	forged.Header["kid"] = "k1"
	forgedTok, err := forged.SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	if code, _, body := f.exchange(t, forgedTok); code != http.StatusUnauthorized {
		t.Errorf("forged signature: %d %v", code, body)
	}
	if code, _, body := f.exchange(t, oidcfixture.Start(t).Token(t, "ci", "api://AzureADTokenExchange", time.Hour)); code != http.StatusUnauthorized {
		t.Errorf("untrusted issuer: %d %v", code, body)
	}
	// A rotated key is fetched when a token names it.
	f.iss.Rotate(t)
	if code, _, body := f.exchange(t, f.iss.Token(t, "ci", "api://AzureADTokenExchange", time.Hour)); code != 200 {
		t.Errorf("after key rotation: %d %v", code, body)
	}

	// The identity deleted: its refresh token grants nothing any more.
	if err := f.meta.DeleteIdentity(context.Background(), "rg", "cacheid"); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.grant(t, rt, "repository:myapp:pull"); code != http.StatusUnauthorized {
		t.Errorf("deleted identity's refresh token: %d", code)
	}
	if code, _, _ := f.exchange(t, f.iss.Token(t, "ci", "api://AzureADTokenExchange", time.Hour)); code != http.StatusUnauthorized {
		t.Errorf("deleted identity's exchange: %d", code)
	}
}

func FuzzParseRoleScope(f *testing.F) {
	reg := "/subscriptions/" + testSub + "/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries/reg01"
	for _, s := range []string{reg, reg + "/repositories/myapp", reg + "/repositories/a/*", "/subscriptions/" + testSub, reg + "/repositories/", "//", "/subscriptions//resourceGroups/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rs, err := ParseRoleScope(s, testSub)
		if err != nil {
			return
		}
		if rs.Repository != "" && (rs.Registry == "" || ValidRepositoryPattern(rs.Repository) != nil) {
			t.Fatalf("%q: %+v", s, rs)
		}
		if rs.Registry != "" && rs.ResourceGroup == "" {
			t.Fatalf("%q: registry without group: %+v", s, rs)
		}
	})
}

func FuzzExchangeRequest(f *testing.F) {
	for _, s := range []string{"grant_type=access_token&service=x&access_token=a.b.c", "grant_type=refresh_token", "access_token=%zz", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		r := httptest.NewRequest(http.MethodPost, "/oauth2/exchange", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		er, err := ParseExchangeRequest(r)
		if err == nil && er.AccessToken == "" {
			t.Fatalf("%q: accepted without an access token", body)
		}
		if er.AccessToken != "" {
			_, _ = unverifiedIssuer(er.AccessToken)
		}
	})
}

func FuzzUnverifiedIssuer(f *testing.F) {
	for _, s := range []string{"eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL3gifQ.c2ln", "a.b.c", "...", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		iss, err := unverifiedIssuer(s)
		if err == nil && iss == "" {
			t.Fatalf("%q: empty issuer accepted", s)
		}
	})
}

// A role assignment's ABAC condition limits what the token endpoint
// grants: the Contributor role conditioned to pull-only outside team-a/
// (the docs' shape with a prefix) gives pull, push and delete under team-a/
// and only pull elsewhere; the unconditioned myapp reader still adds up.
func TestIdentityConditionedRole(t *testing.T) {
	f := newIdentityFixture(t)
	reg := "/subscriptions/" + testSub + "/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries/reg01"
	cond := "(!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/write'}) AND " +
		"!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/delete'})) OR " +
		"@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team-a/'"
	if _, err := ValidateCondition(cond, ConditionVersion); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.meta.PutRoleAssignment(context.Background(), metadata.RoleAssignment{Name: "00000000-0000-4000-8000-000000000009",
		Role: "Container Registry Repository Contributor", PrincipalID: f.principal, Scope: reg, Condition: cond, ConditionVersion: ConditionVersion}); err != nil {
		t.Fatal(err)
	}
	_, rt, body := f.exchange(t, f.iss.Token(t, "ci", "api://AzureADTokenExchange", time.Hour))
	if rt == "" {
		t.Fatalf("exchange: %v", body)
	}
	for scope, want := range map[string]string{
		"repository:team-a/app:pull,push,delete": "repository:team-a/app:pull,push,delete",
		"repository:team-b/app:pull,push,delete": "repository:team-b/app:pull",
		"repository:team-a-infra:push":           "",
		"repository:myapp:pull":                  "repository:myapp:pull",
	} {
		if code, got := f.grant(t, rt, scope); code != 200 || got != want {
			t.Errorf("%s: %d %q, want %q", scope, code, got, want)
		}
	}
}

// An identity's client secret signs in as the identity (client id as the
// user name, as a service principal at ACR) with its role assignments'
// rights; a reset ends the old secret and the refresh tokens it got.
func TestIdentityClientSecret(t *testing.T) {
	f := newIdentityFixture(t)
	ctx := context.Background()
	u, err := f.meta.GetIdentity(ctx, "rg", "cacheid")
	if err != nil {
		t.Fatal(err)
	}
	setSecret := func(secret string) {
		t.Helper()
		h, err := HashPassword(secret)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.meta.SetIdentitySecret(ctx, "rg", "cacheid", h, time.Now(), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	login := func(user, pass, scope string) (int, string, string) {
		t.Helper()
		code, m := f.post(t, f.svc.TokenHandler(func(string) string { return "reg01" }), url.Values{"grant_type": {"password"},
			"service": {"reg01.localhost"}, "scope": {scope}, "username": {user}, "password": {pass}, "access_type": {"offline"}})
		s, _ := m["scope"].(string)
		rt, _ := m["refresh_token"].(string)
		return code, s, rt
	}
	// No secret yet: the client id is no user.
	if code, _, _ := login(u.ClientID, "anything-at-all", "repository:myapp:pull"); code != http.StatusUnauthorized {
		t.Fatalf("no secret set: %d", code)
	}
	setSecret("first-secret-0b1c")
	code, got, rt := login(strings.ToUpper(u.ClientID), "first-secret-0b1c", "repository:myapp:pull repository:other:pull")
	if code != 200 || got != "repository:myapp:pull" || rt == "" {
		t.Fatalf("client secret login: %d %q (refresh token %v)", code, got, rt != "")
	}
	if code, _, _ := login(u.ClientID, "wrong-secret", "repository:myapp:pull"); code != http.StatusUnauthorized {
		t.Fatalf("wrong secret: %d", code)
	}
	if code, got := f.grant(t, rt, "repository:myapp:pull"); code != 200 || got != "repository:myapp:pull" {
		t.Fatalf("refresh token from the secret: %d %q", code, got)
	}
	setSecret("second-secret-7e2d")
	if code, _, _ := login(u.ClientID, "first-secret-0b1c", "repository:myapp:pull"); code != http.StatusUnauthorized {
		t.Fatalf("old secret after a reset: %d", code)
	}
	if code, _ := f.grant(t, rt, "repository:myapp:pull"); code != http.StatusUnauthorized {
		t.Fatalf("refresh token of the old secret after a reset: %d", code)
	}
	if code, got, _ := login(u.ClientID, "second-secret-7e2d", "repository:myapp:pull"); code != 200 || got != "repository:myapp:pull" {
		t.Fatalf("new secret: %d %q", code, got)
	}
}

// A client secret works until its end: at and after it the token
// endpoint and the data plane's Basic login refuse it with 401 and say it
// expired (only to a caller who gave the right secret), the audit log
// records "client secret expired", and refresh tokens got with it end
// too. A secret without an end (set before ends were recorded) never
// expires.
func TestIdentityClientSecretExpiry(t *testing.T) {
	f := newIdentityFixture(t)
	ctx := context.Background()
	u, err := f.meta.GetIdentity(ctx, "rg", "cacheid")
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	svc, err := New(Options{Store: f.meta, Identities: f.meta, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	const secret = "the-client-secret-5f1e"
	h, err := HashPassword(secret)
	if err != nil {
		t.Fatal(err)
	}
	tokens := svc.TokenHandler(func(string) string { return "reg01" })
	login := func(pass string) (int, map[string]any) {
		t.Helper()
		return f.post(t, tokens, url.Values{"grant_type": {"password"}, "service": {"reg01.localhost"}, "scope": {"repository:myapp:pull"},
			"username": {u.ClientID}, "password": {pass}, "access_type": {"offline"}})
	}
	// audits counts the audit log's failed logins of the client id by result.
	audits := func() map[string]int {
		t.Helper()
		es, err := f.meta.ListAudit(ctx, time.Time{}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, e := range es {
			if e.Who == u.ClientID {
				n[e.Result]++
			}
		}
		return n
	}
	for _, tc := range []struct {
		name      string
		ends      time.Time
		pass      string
		code      int
		audit     string // "" for none
		msgExpiry bool
	}{
		{"no end", time.Time{}, secret, http.StatusOK, "", false},
		{"ends later", clock.Add(time.Minute), secret, http.StatusOK, "", false},
		{"ends now", clock, secret, http.StatusUnauthorized, "client secret expired", true},
		{"ended", clock.Add(-24 * time.Hour), secret, http.StatusUnauthorized, "client secret expired", true},
		{"ended, wrong secret", clock.Add(-24 * time.Hour), "not-the-secret", http.StatusUnauthorized, "invalid credentials", false},
		{"ends later, wrong secret", clock.Add(time.Hour), "not-the-secret", http.StatusUnauthorized, "invalid credentials", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := f.meta.SetIdentitySecret(ctx, "rg", "cacheid", h, clock.Add(-48*time.Hour), tc.ends); err != nil {
				t.Fatal(err)
			}
			before := audits()
			code, body := login(tc.pass)
			msg := fmt.Sprint(body)
			if code != tc.code {
				t.Fatalf("login: %d %s, want %d", code, msg, tc.code)
			}
			if got := strings.Contains(msg, "expired"); got != tc.msgExpiry {
				t.Errorf("answer %s: says expired %v, want %v", msg, got, tc.msgExpiry)
			}
			if strings.Contains(msg, tc.pass) {
				t.Errorf("answer echoes the secret: %s", msg)
			}
			want := maps.Clone(before)
			if tc.audit != "" {
				want[tc.audit]++
			}
			if got := audits(); !maps.Equal(got, want) {
				t.Errorf("audit log %v, want %v", got, want)
			}
			// The data plane's Basic login says the same.
			r := httptest.NewRequest(http.MethodGet, "http://reg01.localhost/v2/myapp/manifests/v1", nil)
			r.SetBasicAuth(u.ClientID, tc.pass)
			w := httptest.NewRecorder()
			_, ok := svc.Authorize(w, r, "reg01", []Scope{RepoScope("myapp", Pull)})
			if ok != (tc.code == http.StatusOK) || (!ok && w.Code != http.StatusUnauthorized) {
				t.Fatalf("Basic login: allowed %v, %d %s", ok, w.Code, w.Body)
			}
			if !ok && strings.Contains(w.Body.String(), "expired") != tc.msgExpiry {
				t.Errorf("Basic login answer %s: says expired, want %v", w.Body, tc.msgExpiry)
			}
		})
	}

	// A refresh token got before the end stops working at it.
	if err := f.meta.SetIdentitySecret(ctx, "rg", "cacheid", h, clock, clock.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	code, body := login(secret)
	rt, _ := body["refresh_token"].(string)
	if code != http.StatusOK || rt == "" {
		t.Fatalf("login before the end: %d %v", code, body)
	}
	refresh := func() int {
		t.Helper()
		code, _ := f.post(t, tokens, url.Values{"grant_type": {"refresh_token"}, "service": {"reg01.localhost"}, "scope": {"repository:myapp:pull"}, "refresh_token": {rt}})
		return code
	}
	if code := refresh(); code != http.StatusOK {
		t.Fatalf("refresh before the end: %d", code)
	}
	clock = clock.Add(time.Hour)
	if code := refresh(); code != http.StatusUnauthorized {
		t.Fatalf("refresh after the end: %d", code)
	}
}
