package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// testAdminToken is the admin token of in-process servers (strong enough
// to be accepted: 128 bits or more).
const testAdminToken = "server-test-admin-token-0123456789"

// Registries created through the API are served by Host, survive a
// restart (startup flags win over them), and are deleted with their
// content; those of startup flags cannot be deleted.
func TestRegistriesCreatedThroughAPI(t *testing.T) {
	dir := t.TempDir()
	mo := ManagementOptions{AdminToken: testAdminToken}
	ts, _ := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	ts.token = testAdminToken
	const v = "?api-version=2025-04-01"
	body := map[string]any{"location": "local", "sku": map[string]any{"name": "Basic"},
		"properties": map[string]any{"hosts": []string{"team2.example.com"}, "anonymousPullEnabled": true}}
	st, m := ts.do("PUT", armBase+"TeamTwo"+v, "", body)
	props, _ := m["properties"].(map[string]any)
	if st != 201 || m["name"] != "teamtwo" || props["loginServer"] != "team2.example.com" || props["anonymousPullEnabled"] != true {
		t.Fatalf("create: %d %v", st, m)
	}
	if st, m := ts.do("PUT", armBase+"othertwo"+v, "", map[string]any{"sku": map[string]any{"name": "Basic"},
		"properties": map[string]any{"hosts": []string{"team2.example.com"}}}); st != 400 {
		t.Fatalf("host taken by another registry: %d %v", st, m)
	}
	d := digest.FromString("two")
	if st, _ := ts.do("POST", "/v2/team/two/blobs/uploads/?digest="+d.String(), "team2.example.com", "two"); st != 201 {
		t.Fatalf("push on the new registry's host: %d", st)
	}
	if _, cat := ts.do("GET", "/v2/_catalog", "team2.example.com", nil); strings.Join(toStrings(cat["repositories"]), ",") != "team/two" {
		t.Fatalf("new registry catalog: %v", cat)
	}
	if _, cat := ts.do("GET", "/v2/_catalog", "", nil); len(toStrings(cat["repositories"])) != 0 {
		t.Fatalf("default registry sees the new one's content: %v", cat)
	}
	if st, m := ts.do("DELETE", armBase+"default"+v, "", nil); st != 409 {
		t.Fatalf("delete the default registry: %d %v", st, m)
	}
	ts.closer()

	ts2, _ := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	ts2.token = testAdminToken
	if _, cat := ts2.do("GET", "/v2/_catalog", "team2.example.com", nil); strings.Join(toStrings(cat["repositories"]), ",") != "team/two" {
		t.Fatalf("after restart: %v", cat)
	}
	if st, _ := ts2.do("DELETE", armBase+"teamtwo"+v, "", nil); st != 200 {
		t.Fatalf("delete: %d", st)
	}
	if st, _ := ts2.do("GET", armBase+"teamtwo"+v, "", nil); st != 404 {
		t.Fatalf("deleted registry: %d", st)
	}
	if st, _ := ts2.do("DELETE", armBase+"teamtwo"+v, "", nil); st != 204 {
		t.Fatalf("delete again: %d", st)
	}
	// Re-created, it starts empty.
	if st, _ := ts2.do("PUT", armBase+"teamtwo"+v, "", body); st != 201 {
		t.Fatalf("re-create: %d", st)
	}
	if _, cat := ts2.do("GET", "/v2/_catalog", "team2.example.com", nil); len(toStrings(cat["repositories"])) != 0 {
		t.Fatalf("re-created registry has old content: %v", cat)
	}
}

// A replica serves registries another replica created or deleted through
// the API within a few seconds (both share the metadata store).
func TestRegistriesFollowOtherReplicas(t *testing.T) {
	dir := t.TempDir()
	mo := ManagementOptions{AdminToken: testAdminToken}
	a, _ := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	b, _ := startServer(t, dir, &lockedBuffer{}, mo, PullThroughOptions{})
	a.token, b.token = testAdminToken, testAdminToken
	const v = "?api-version=2025-04-01"
	body := map[string]any{"sku": map[string]any{"name": "Standard"}, "properties": map[string]any{"hosts": []string{"team3.example.com"}}}
	if st, m := a.do("PUT", armBase+"teamthree"+v, "", body); st != 201 {
		t.Fatalf("create on a: %d %v", st, m)
	}
	d := digest.FromString("three")
	if st, _ := a.do("POST", "/v2/team/three/blobs/uploads/?digest="+d.String(), "team3.example.com", "three"); st != 201 {
		t.Fatalf("push on a: %d", st)
	}
	catalogOnB := func() string {
		_, cat := b.do("GET", "/v2/_catalog", "team3.example.com", nil)
		return strings.Join(toStrings(cat["repositories"]), ",")
	}
	deadline := time.Now().Add(3 * registrySyncInterval)
	for catalogOnB() != "team/three" {
		if time.Now().After(deadline) {
			t.Fatalf("b's catalog on team3.example.com: %q", catalogOnB())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, _ := a.do("DELETE", armBase+"teamthree"+v, "", nil); st != 200 {
		t.Fatalf("delete on a: %d", st)
	}
	deadline = time.Now().Add(3 * registrySyncInterval)
	for {
		st, _ := b.do("GET", armBase+"teamthree"+v, "", nil)
		if st == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("b still has the deleted registry: %d", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// With --external-url every registry's token realm is the same host; the
// token endpoint picks the registry by the service the challenge named.
func TestTokenRealmSharedByRegistries(t *testing.T) {
	s, err := New(context.Background(), Options{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), RegistryName: "default",
		Logger: slog.New(slog.NewTextHandler(&lockedBuffer{}, nil)),
		Management: ManagementOptions{AdminToken: testAdminToken, ExternalURL: "https://arca.example.com",
			Registries: []string{"teamreg=team.example.com"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	do := func(method, host, path, authz string, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "http://"+host+path, strings.NewReader(body))
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		if body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	mg := "Bearer " + testAdminToken
	if w := do("PATCH", "arca.example.com", armBase+"teamreg?api-version=2025-04-01", mg, `{"properties":{"adminUserEnabled":true}}`); w.Code != 200 {
		t.Fatalf("enable admin: %d %s", w.Code, w.Body)
	}
	w := do("POST", "arca.example.com", armBase+"teamreg/listCredentials?api-version=2025-04-01", mg, "")
	var creds struct {
		Passwords []struct{ Value string } `json:"passwords"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &creds); err != nil || len(creds.Passwords) == 0 {
		t.Fatalf("listCredentials: %d %s", w.Code, w.Body)
	}
	w = do("GET", "team.example.com", "/v2/app/tags/list", "", "")
	if got := w.Header().Get("WWW-Authenticate"); w.Code != 401 || !strings.Contains(got, `realm="https://arca.example.com/oauth2/token",service="team.example.com"`) {
		t.Fatalf("challenge: %d %q", w.Code, got)
	}
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("teamreg:"+creds.Passwords[0].Value))
	w = do("GET", "arca.example.com", "/oauth2/token?service=team.example.com&scope=repository:app:pull", basic, "")
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &tok); err != nil || w.Code != 200 {
		t.Fatalf("token: %d %s", w.Code, w.Body)
	}
	if w := do("GET", "team.example.com", "/v2/app/tags/list", "Bearer "+tok.Token, ""); w.Code == 401 || w.Code == 403 {
		t.Fatalf("teamreg's token on teamreg: %d %s", w.Code, w.Body)
	}
	if w := do("GET", "other.example.com", "/v2/app/tags/list", "Bearer "+tok.Token, ""); w.Code != 401 {
		t.Fatalf("teamreg's token on the default registry: %d", w.Code)
	}
}
