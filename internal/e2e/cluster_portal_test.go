package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
)

// portalBrowser is a browser over plain HTTP that carries one portal
// session cookie to whichever replica it is pointed at.
type portalBrowser struct {
	t      *testing.T
	cookie *http.Cookie
	cl     *http.Client
}

// signInPortal signs in on a with token and returns the session.
func signInPortal(t *testing.T, a *arca, token string) *portalBrowser {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp := portalSignInAs(t, cl, a.URL(), "", token)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in on %s: %d", a.Addr, resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "arca_portal" {
			return &portalBrowser{t: t, cookie: c, cl: &http.Client{CheckRedirect: cl.CheckRedirect}}
		}
	}
	t.Fatalf("sign-in on %s set no session cookie", a.Addr)
	return nil
}

// do sends a request with the session cookie to a and returns the status,
// the redirect target and the body.
func (b *portalBrowser) do(a *arca, method, path string, form url.Values) (int, string, string) {
	b.t.Helper()
	var rd io.Reader
	if form != nil {
		rd = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, a.URL()+path, rd)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.AddCookie(&http.Cookie{Name: b.cookie.Name, Value: b.cookie.Value})
	resp, err := b.cl.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(body)
}

// csrf reads the session's CSRF token from a page a serves.
func (b *portalBrowser) csrf(a *arca, path string) string {
	b.t.Helper()
	st, loc, body := b.do(a, http.MethodGet, path, nil)
	m := signinCSRF.FindStringSubmatch(body)
	if st != http.StatusOK || m == nil {
		b.t.Fatalf("GET %s on %s: %d (Location %q), no CSRF token", path, a.Addr, st, loc)
	}
	return m[1]
}

// signedIn reports whether a accepts the session (GET /portal/cache).
func (b *portalBrowser) signedIn(a *arca) bool {
	b.t.Helper()
	st, loc, _ := b.do(a, http.MethodGet, "/portal/cache", nil)
	switch {
	case st == http.StatusOK:
		return true
	case st == http.StatusSeeOther && strings.HasPrefix(loc, "/portal/signin"):
		return false
	}
	b.t.Fatalf("GET /portal/cache on %s: %d, Location %q", a.Addr, st, loc)
	return false
}

// TestClusterPortalSessions: portal sessions live in the shared metadata
// store, so no replica needs session affinity. A browser signed in on
// replica A creates a cache rule through replica B with the CSRF token B
// shows it; signing out on B ends the session on A. The store keeps who
// signed in, not the token, under the hash of the session ID; a session
// of a principal that is deleted, or whose token is replaced, is refused
// on every replica and its row is gone.
func TestClusterPortalSessions(t *testing.T) {
	c := startCluster(t, 2, true)
	a, b := c.nodes[0], c.nodes[1]
	db := c.sql(t)

	br := signInPortal(t, a, ptAdminToken)
	if !br.signedIn(b) {
		t.Fatal("a session from replica A is refused on replica B")
	}
	csrfB := br.csrf(b, "/portal/cache/new")
	if csrfA := br.csrf(a, "/portal/cache/new"); csrfA != csrfB {
		t.Errorf("one session, two CSRF tokens: %q on A, %q on B", csrfA, csrfB)
	}
	form := url.Values{"csrf": {csrfB}, "name": {"ha-portal-rule"}, "sourceRegistry": {"mcr.microsoft.com"},
		"repositoryPath": {"dotnet/runtime"}, "target": {"dotnet/runtime"}, "syncMode": {"PassiveSync"}, "action": {"save"}}
	if st, loc, body := br.do(b, http.MethodPost, "/portal/cache/new", form); st != http.StatusSeeOther {
		t.Fatalf("create rule through B: %d, Location %q\n%s", st, loc, body)
	}
	if st, _, body := mgmtDo(t, http.MethodGet, mgmtURL(a, "/cacheRules/ha-portal-rule"), nil); st != http.StatusOK {
		t.Fatalf("the rule created through the portal on B, read on A: %d %s", st, body)
	}

	// What the store holds: the ID's SHA-256, the principal; no token.
	sum := sha256.Sum256([]byte(br.cookie.Value))
	var principal, stamp, csrf string
	if err := db.QueryRow(`SELECT principal, stamp, csrf FROM portal_sessions WHERE id_hash = $1`, hex.EncodeToString(sum[:])).
		Scan(&principal, &stamp, &csrf); err != nil {
		t.Fatalf("session row by the hash of its ID: %v", err)
	}
	if principal != "admin" || csrf != csrfB {
		t.Errorf("session row: principal %q, csrf %q; want admin, %q", principal, csrf, csrfB)
	}
	if n := queryString(db, `SELECT count(*) FROM portal_sessions WHERE id_hash = $1 OR stamp LIKE $2 OR csrf LIKE $2`,
		br.cookie.Value, "%"+ptAdminToken+"%"); n != "0" {
		t.Errorf("%s session rows hold the raw session ID or the token", n)
	}

	// Sign out on B: A refuses the session.
	if st, loc, _ := br.do(b, http.MethodPost, "/portal/signout", url.Values{"csrf": {csrfB}}); st != http.StatusSeeOther || loc != "/portal/signin" {
		t.Fatalf("sign-out on B: %d, Location %q", st, loc)
	}
	if br.signedIn(a) {
		t.Error("replica A still accepts a session signed out on B")
	}

	// A principal's session ends when the principal is deleted, or when
	// its token is replaced.
	newPrincipal := func() string {
		t.Helper()
		st, _, body := mgmtDo(t, http.MethodPut, a.URL()+"/arca/v1/principals/portal-ops", map[string]string{"role": "Contributor"})
		var pr struct {
			Token string `json:"token"`
		}
		if st/100 != 2 || json.Unmarshal(body, &pr) != nil || pr.Token == "" {
			t.Fatalf("PUT principal: %d %s", st, body)
		}
		return pr.Token
	}
	ops := signInPortal(t, b, newPrincipal())
	if !ops.signedIn(a) {
		t.Fatal("a principal's session from B is refused on A")
	}
	newPrincipal() // a new token for portal-ops
	if ops.signedIn(a) {
		t.Error("a session of a replaced token is accepted")
	}
	ops = signInPortal(t, a, newPrincipal())
	if !ops.signedIn(b) {
		t.Fatal("a principal's session from A is refused on B")
	}
	if st, _, body := mgmtDo(t, http.MethodDelete, a.URL()+"/arca/v1/principals/portal-ops", nil); st/100 != 2 {
		t.Fatalf("DELETE principal: %d %s", st, body)
	}
	if ops.signedIn(b) || ops.signedIn(a) {
		t.Error("a deleted principal's session is accepted")
	}
	if n := queryString(db, `SELECT count(*) FROM portal_sessions WHERE principal = 'portal-ops'`); n != "0" {
		t.Errorf("%s sessions of the deleted principal are left in the store", n)
	}
}
