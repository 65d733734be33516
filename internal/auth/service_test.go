package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/arcacache/arca/internal/metadata"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestService(t testing.TB, now func() time.Time) (*Service, metadata.Store) {
	t.Helper()
	meta, err := metadata.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "arca.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	if err := meta.SyncRegistries(context.Background(), []metadata.RegistryRecord{{Name: "reg01"}}); err != nil {
		t.Fatal(err)
	}
	svc, err := New(Options{Store: meta, Now: now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return svc, meta
}

func signedToken(t testing.TB, svc *Service, reg, kind, sub string, access []Scope) string {
	t.Helper()
	tok, _, err := svc.issue(context.Background(), Identity{Registry: reg, Kind: kind, Name: sub}, access)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// addToken creates token name with scope map actions and returns its password.
func addToken(t *testing.T, meta metadata.Store, name string, actions ...string) string {
	t.Helper()
	ctx := context.Background()
	sm := name + "-scope-map"
	if _, err := meta.PutScopeMap(ctx, "reg01", metadata.ScopeMap{Name: sm, Actions: actions}); err != nil {
		t.Fatal(err)
	}
	pw, _ := GenerateSecret()
	h, _ := HashPassword(pw)
	_, err := meta.UpdateToken(ctx, "reg01", name, func(tk *metadata.Token, _ bool) error {
		tk.ScopeMap, tk.Status = sm, StatusEnabled
		tk.Passwords = []metadata.TokenPassword{{Name: "password1", Hash: h, Created: time.Now()}}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

func basic(u, p string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+p)) }

func authorize(svc *Service, authz string, need ...Scope) *httptest.ResponseRecorder {
	r := httptest.NewRequest("GET", "http://reg.test/v2/x", nil)
	r.RemoteAddr = "192.0.2.1:1234"
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	w := httptest.NewRecorder()
	if _, ok := svc.Authorize(w, r, "reg01", need); ok {
		w.WriteHeader(200)
	}
	return w
}

func getToken(t *testing.T, svc *Service, authz, query string) (int, tokenResponse) {
	t.Helper()
	r := httptest.NewRequest("GET", "http://reg.test/oauth2/token?"+query, nil)
	r.RemoteAddr = "192.0.2.1:1234"
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	w := httptest.NewRecorder()
	svc.TokenHandler(func(string) string { return "reg01" }).ServeHTTP(w, r)
	var tr tokenResponse
	_ = json.Unmarshal(w.Body.Bytes(), &tr)
	return w.Code, tr
}

func TestAnonymousChallengeAndAnonymousPull(t *testing.T) {
	svc, meta := newTestService(t, nil)
	w := authorize(svc, "", RepoScope("team/app", Pull))
	if w.Code != 401 {
		t.Fatalf("anonymous pull: %d", w.Code)
	}
	want := `Bearer realm="http://reg.test/oauth2/token",service="reg.test",scope="repository:team/app:pull"`
	if got := w.Header().Get("WWW-Authenticate"); got != want {
		t.Fatalf("challenge %q, want %q", got, want)
	}
	if !strings.Contains(w.Body.String(), `"code":"UNAUTHORIZED"`) || !strings.Contains(w.Body.String(), `"Name":"team/app"`) {
		t.Fatalf("body %s", w.Body)
	}
	if code, _ := getToken(t, svc, "", "scope=repository:team/app:pull"); code != 401 {
		t.Fatalf("anonymous token with anonymous pull off: %d", code)
	}
	if err := meta.UpdateRegistrySettings(context.Background(), "reg01", func(a *metadata.RegistrySettings) error { a.AnonymousPull = true; return nil }); err != nil {
		t.Fatal(err)
	}
	svc.Invalidate("reg01") // as the management API does after a change
	if w := authorize(svc, "", RepoScope("team/app", Pull)); w.Code != 200 {
		t.Fatalf("anonymous pull on: %d", w.Code)
	}
	if w := authorize(svc, "", RepoScope("team/app", Pull, Push)); w.Code != 401 {
		t.Fatalf("anonymous push with anonymous pull on: %d", w.Code)
	}
	if w := authorize(svc, ""); w.Code != 401 {
		t.Fatalf("anonymous GET /v2/ must challenge (clients log in on it): %d", w.Code)
	}
	code, tr := getToken(t, svc, "", "scope=repository:team/app:pull,push")
	if code != 200 {
		t.Fatalf("anonymous token: %d", code)
	}
	if w := authorize(svc, "Bearer "+tr.Token, RepoScope("team/app", Pull)); w.Code != 200 {
		t.Fatalf("anonymous token pull: %d", w.Code)
	}
	if w := authorize(svc, "Bearer "+tr.Token, RepoScope("team/app", Pull, Push)); w.Code != 403 {
		t.Fatalf("anonymous token push: %d %s", w.Code, w.Body)
	}
}

func TestScopedTokenBasicAndBearer(t *testing.T) {
	svc, _ := newTestService(t, nil)
	_, meta := svc, svc.store.(metadata.Store)
	pw := addToken(t, meta, "reader", "repositories/team/*/content/read")

	if w := authorize(svc, basic("reader", pw), RepoScope("team/app", Pull)); w.Code != 200 {
		t.Fatalf("basic pull in scope: %d", w.Code)
	}
	if w := authorize(svc, basic("reader", pw), RepoScope("team/app", Pull, Push)); w.Code != 403 || !strings.Contains(w.Body.String(), "DENIED") {
		t.Fatalf("basic push out of scope: %d %s", w.Code, w.Body)
	}
	if w := authorize(svc, basic("reader", pw), RepoScope("other", Pull)); w.Code != 403 {
		t.Fatalf("basic pull out of scope: %d", w.Code)
	}
	if w := authorize(svc, basic("reader", "wrong"), RepoScope("team/app", Pull)); w.Code != 401 {
		t.Fatalf("wrong password: %d", w.Code)
	}

	code, tr := getToken(t, svc, basic("reader", pw), "service=reg.test&scope=repository:team/app:pull,push&scope=repository:other:pull")
	if code != 200 || tr.Token == "" || tr.Token != tr.AccessToken || tr.ExpiresIn != 300 {
		t.Fatalf("token: %d %+v", code, tr)
	}
	var c Claims
	if _, _, err := jwt.NewParser().ParseUnverified(tr.Token, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Access) != 1 || c.Access[0].Name != "team/app" || strings.Join(c.Access[0].Actions, ",") != "pull" {
		t.Fatalf("granted %+v, want only pull on team/app", c.Access)
	}
	if w := authorize(svc, "Bearer "+tr.Token, RepoScope("team/app", Pull)); w.Code != 200 {
		t.Fatalf("bearer pull: %d", w.Code)
	}
	// In the identity's scope but not the token's: ask for another token.
	w := authorize(svc, "Bearer "+tr.Token, RepoScope("team/lib", Pull))
	if w.Code != 401 || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		t.Fatalf("bearer other repo in identity scope: %d %q", w.Code, w.Header().Get("WWW-Authenticate"))
	}
	if w := authorize(svc, "Bearer "+tr.Token, RepoScope("team/app", Pull, Push)); w.Code != 403 {
		t.Fatalf("bearer push: %d", w.Code)
	}
	// Disabled: passwords stop working at once.
	if _, err := meta.UpdateToken(context.Background(), "reg01", "reader", func(tk *metadata.Token, _ bool) error { tk.Status = StatusDisabled; return nil }); err != nil {
		t.Fatal(err)
	}
	if w := authorize(svc, basic("reader", pw), RepoScope("team/app", Pull)); w.Code != 401 {
		t.Fatalf("disabled token: %d", w.Code)
	}
}

func TestForgedAndExpiredTokensRefused(t *testing.T) {
	clk := &clock{t: time.Now()}
	svc, _ := newTestService(t, clk.now)
	access := []Scope{RepoScope("app", Pull)}
	good := signedToken(t, svc, "reg01", KindToken, "t1", access)
	if w := authorize(svc, "Bearer "+good, RepoScope("app", Pull)); w.Code != 200 {
		t.Fatalf("good token: %d", w.Code)
	}
	claims := func() *Claims {
		return &Claims{RegisteredClaims: jwt.RegisteredClaims{Issuer: Issuer, Subject: "t1", Audience: jwt.ClaimStrings{"reg01"},
			IssuedAt: jwt.NewNumericDate(clk.now()), ExpiresAt: jwt.NewNumericDate(clk.now().Add(time.Hour))}, Access: access, Kind: KindToken}
	}
	keys, _ := svc.store.SigningKeys(context.Background())
	sign := func(m jwt.SigningMethod, key any, kid string, c *Claims) string {
		tk := jwt.NewWithClaims(m, c)
		tk.Header["kid"] = kid
		s, err := tk.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Tampered: the payload swapped for one granting push, signature kept.
	parts := strings.Split(good, ".")
	c := claims()
	c.Access = []Scope{RepoScope("app", Pull, Push)}
	payload, _ := json.Marshal(c)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, keys[0].ID, claims())
	wrongKey := sign(jwt.SigningMethodHS256, []byte("not the key, but 32 bytes long!!"), keys[0].ID, claims())
	unknownKid := sign(jwt.SigningMethodHS256, keys[0].Secret, "nokey", claims())
	other := claims()
	other.Audience = jwt.ClaimStrings{"otherreg"}
	wrongAud := sign(jwt.SigningMethodHS256, keys[0].Secret, keys[0].ID, other)
	noExp := claims()
	noExp.ExpiresAt = nil
	withoutExp := sign(jwt.SigningMethodHS256, keys[0].Secret, keys[0].ID, noExp)
	for name, tok := range map[string]string{"tampered": tampered, "alg none": none, "wrong key": wrongKey, "unknown kid": unknownKid,
		"wrong audience": wrongAud, "no exp": withoutExp, "garbage": "x.y.z"} {
		w := authorize(svc, "Bearer "+tok, RepoScope("app", Pull))
		if w.Code != 401 || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Errorf("%s: %d %q", name, w.Code, w.Header().Get("WWW-Authenticate"))
		}
	}
	clk.add(6 * time.Minute) // past the 5-minute lifetime and the leeway
	if w := authorize(svc, "Bearer "+good, RepoScope("app", Pull)); w.Code != 401 {
		t.Fatalf("expired token: %d", w.Code)
	}
	// Ten forged tokens within a minute block the address, even for a
	// good token (expired ones do not count).
	for i := 0; i < DefaultMaxFailures; i++ {
		authorize(svc, "Bearer "+tampered, RepoScope("app", Pull))
	}
	fresh := signedToken(t, svc, "reg01", KindToken, "t1", access)
	if w := authorize(svc, "Bearer "+fresh, RepoScope("app", Pull)); w.Code != 429 {
		t.Fatalf("after 10 forged tokens: %d", w.Code)
	}
}

func TestKeyRotationKeepsPreviousKeyValid(t *testing.T) {
	clk := &clock{t: time.Now()}
	svc, meta := newTestService(t, clk.now)
	access := []Scope{RepoScope("app", Pull)}
	_ = signedToken(t, svc, "reg01", KindToken, "t1", access) // creates the first key
	keys0, _ := meta.SigningKeys(context.Background())
	// Sign with the first key one minute before it is replaced.
	clk.add(DefaultRotateAfter - time.Minute)
	old := signedToken(t, svc, "reg01", KindToken, "t1", access)
	clk.add(2 * time.Minute) // rotation is due
	fresh := signedToken(t, svc, "reg01", KindToken, "t1", access)
	keys1, _ := meta.SigningKeys(context.Background())
	if len(keys1) != len(keys0)+1 || keys1[0].ID == keys0[0].ID {
		t.Fatalf("no rotation: %d keys before, %d after", len(keys0), len(keys1))
	}
	for name, tok := range map[string]string{"old key": old, "new key": fresh} {
		if w := authorize(svc, "Bearer "+tok, RepoScope("app", Pull)); w.Code != 200 {
			t.Fatalf("%s token after rotation: %d", name, w.Code)
		}
	}
}

func TestRefreshTokens(t *testing.T) {
	svc, meta := newTestService(t, nil)
	pw := addToken(t, meta, "pusher", "repositories/app/content/read", "repositories/app/content/write")
	code, tr := getToken(t, svc, basic("pusher", pw), "scope=repository:app:pull&offline_token=true")
	if code != 200 || !strings.HasPrefix(tr.RefreshToken, refreshPrefix) {
		t.Fatalf("offline token: %d %+v", code, tr)
	}
	post := func(form url.Values) (int, tokenResponse) {
		r := httptest.NewRequest("POST", "http://reg.test/oauth2/token", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		svc.TokenHandler(func(string) string { return "reg01" }).ServeHTTP(w, r)
		var out tokenResponse
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		return w.Code, out
	}
	code, rt := post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}, "service": {"reg.test"}, "scope": {"repository:app:pull,push"}})
	if code != 200 || rt.Scope != "repository:app:pull,push" {
		t.Fatalf("refresh grant: %d %+v", code, rt)
	}
	if w := authorize(svc, "Bearer "+rt.AccessToken, RepoScope("app", Pull, Push)); w.Code != 200 {
		t.Fatalf("refreshed token push: %d", w.Code)
	}
	// The refresh token works as the password of the null user, as in ACR.
	if w := authorize(svc, basic(NullUser, tr.RefreshToken), RepoScope("app", Pull)); w.Code != 200 {
		t.Fatalf("null user: %d", w.Code)
	}
	code, _ = post(url.Values{"grant_type": {"password"}, "username": {"pusher"}, "password": {pw}, "scope": {"repository:app:pull"}})
	if code != 200 {
		t.Fatalf("password grant: %d", code)
	}
	// A new password revokes refresh tokens issued for the old one.
	h, _ := HashPassword("new-password-that-is-long-enough")
	if _, err := meta.UpdateToken(context.Background(), "reg01", "pusher", func(tk *metadata.Token, _ bool) error {
		tk.Passwords = []metadata.TokenPassword{{Name: "password1", Hash: h}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if code, _ := post(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tr.RefreshToken}}); code != 401 {
		t.Fatalf("refresh after password change: %d", code)
	}
	if code, _ := post(url.Values{"grant_type": {"client_credentials"}}); code != 400 {
		t.Fatalf("unknown grant: %d", code)
	}
}

func TestFailedLoginsThrottled(t *testing.T) {
	svc, meta := newTestService(t, nil)
	pw := addToken(t, meta, "reader", "repositories/*/content/read")
	for i := 0; i < DefaultMaxFailures; i++ {
		if w := authorize(svc, basic("reader", "wrong"), RepoScope("app", Pull)); w.Code != 401 {
			t.Fatalf("attempt %d: %d", i, w.Code)
		}
	}
	// Over budget: even the right password is refused without a check.
	if w := authorize(svc, basic("reader", pw), RepoScope("app", Pull)); w.Code != 429 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("after %d failures: %d", DefaultMaxFailures, w.Code)
	}
	if code, _ := getToken(t, svc, basic("reader", pw), "scope=repository:app:pull"); code != 429 {
		t.Fatalf("token endpoint after failures: %d", code)
	}
	list, err := meta.ListAudit(context.Background(), time.Time{}, 100)
	if err != nil || len(list) < DefaultMaxFailures || list[len(list)-1].Who != "reader" || list[len(list)-1].Result != "invalid credentials" || list[0].Result != "throttled" {
		t.Fatalf("audit: %v %+v", err, list)
	}
}

// Two services on one store are two replicas: failures spread over them
// reach the limit at the same count as on one, and the right password is
// then refused on both; once the window ends, it is accepted again.
func TestFailedLoginsThrottledAcrossReplicas(t *testing.T) {
	clk := &clock{t: time.Now()}
	svc, meta := newTestService(t, clk.now)
	other, err := New(Options{Store: meta, Now: clk.now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	replicas := []*Service{svc, other}
	pw := addToken(t, meta, "reader", "repositories/*/content/read")
	for i := 0; i < DefaultMaxFailures; i++ {
		if w := authorize(replicas[i%2], basic("reader", "wrong"), RepoScope("app", Pull)); w.Code != 401 {
			t.Fatalf("attempt %d on replica %d: %d", i, i%2, w.Code)
		}
	}
	for i, r := range replicas {
		if w := authorize(r, basic("reader", pw), RepoScope("app", Pull)); w.Code != 429 {
			t.Errorf("replica %d after %d failures spread over two: %d, want 429", i, DefaultMaxFailures, w.Code)
		}
	}
	clk.add(DefaultFailureWindow)
	for i, r := range replicas {
		if w := authorize(r, basic("reader", pw), RepoScope("app", Pull)); w.Code != 200 {
			t.Errorf("replica %d after the window: %d, want 200", i, w.Code)
		}
	}
}

func TestAdminUser(t *testing.T) {
	svc, meta := newTestService(t, nil)
	pw, _ := GenerateSecret()
	h, _ := HashPassword(pw)
	set := func(enabled bool) {
		if err := meta.UpdateRegistrySettings(context.Background(), "reg01", func(a *metadata.RegistrySettings) error {
			a.AdminEnabled, a.AdminPasswords[1] = enabled, h
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	set(true)
	if w := authorize(svc, basic("REG01", pw), RepoScope("any/repo", Pull, Push), RepoScope("x", Delete), CatalogScope); w.Code != 200 {
		t.Fatalf("admin (second password): %d", w.Code)
	}
	set(false)
	if w := authorize(svc, basic("reg01", pw), RepoScope("any/repo", Pull)); w.Code != 401 {
		t.Fatalf("admin disabled: %d", w.Code)
	}
}

// A refused token request says why: no credentials where anonymous pull
// is off is not "invalid username or password" (none were given).
func TestTokenRefusalMessages(t *testing.T) {
	svc, _ := newTestService(t, nil)
	for _, tc := range []struct {
		name, authz, want string
	}{
		{"no credentials", "", "authentication required: no credentials were sent, and anonymous pull is disabled on this registry"},
		{"unknown user", "Basic " + base64.StdEncoding.EncodeToString([]byte("nobody:wrong-password")), "invalid username or password"},
	} {
		r := httptest.NewRequest("GET", "http://reg.test/oauth2/token?scope=repository:team/app:pull&service=reg.test", nil)
		r.RemoteAddr = "192.0.2.7:1234"
		if tc.authz != "" {
			r.Header.Set("Authorization", tc.authz)
		}
		w := httptest.NewRecorder()
		svc.TokenHandler(func(string) string { return "reg01" }).ServeHTTP(w, r)
		var body struct {
			Errors []struct{ Code, Message string }
		}
		_ = json.Unmarshal(w.Body.Bytes(), &body)
		if w.Code != 401 || len(body.Errors) != 1 || body.Errors[0].Code != "UNAUTHORIZED" || body.Errors[0].Message != tc.want {
			t.Errorf("%s: %d %s, want 401 UNAUTHORIZED %q", tc.name, w.Code, w.Body, tc.want)
		}
		if got := w.Header().Get("WWW-Authenticate"); got != `Basic realm="arca"` {
			t.Errorf("%s: WWW-Authenticate %q, want a Basic challenge", tc.name, got)
		}
	}
}
