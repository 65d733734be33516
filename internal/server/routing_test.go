package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// The full handler answers /v2/ paths with "..", "." or "//" elements with
// an OCI error, not ServeMux's redirect to a cleaned path.
func TestDotSegmentsNotRedirected(t *testing.T) {
	s, err := New(context.Background(), Options{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), RegistryName: "default", InsecureOpen: true,
		Logger: slog.New(slog.NewTextHandler(&lockedBuffer{}, nil)), Management: ManagementOptions{AdminToken: testAdminToken},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/v2/a//b/tags/list", "/v2/../../etc/passwd/manifests/latest", "/v2/x/blobs/uploads/../../../../pwned"} {
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.URL.Opaque = p
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode/100 != 4 || !strings.Contains(string(b), `"errors"`) {
			t.Errorf("%s: %d %s", p, res.StatusCode, b)
		}
	}
}

// The repository API (/acr/v1/) is closed by default: without credentials
// every route answers 401 with a challenge naming the scope it needs; the
// admin user reads attributes, untags and deletes the repository.
func TestRepositoryAPIAccess(t *testing.T) {
	s, err := New(context.Background(), Options{
		Addr: "127.0.0.1:0", DataDir: t.TempDir(), RegistryName: "default",
		Logger: slog.New(slog.NewTextHandler(&lockedBuffer{}, nil)), Management: ManagementOptions{AdminToken: testAdminToken},
	})
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()
	do := func(method, path, authz, ctype, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "http://arca.test"+path, strings.NewReader(body))
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	mg := "Bearer " + testAdminToken
	if w := do("PATCH", armBase+"default?api-version=2025-04-01", mg, "application/json", `{"properties":{"adminUserEnabled":true}}`); w.Code != 200 {
		t.Fatalf("enable admin: %d %s", w.Code, w.Body)
	}
	w := do("POST", armBase+"default/listCredentials?api-version=2025-04-01", mg, "", "")
	var creds struct {
		Passwords []struct{ Value string } `json:"passwords"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &creds); err != nil || len(creds.Passwords) == 0 {
		t.Fatalf("listCredentials: %d %s", w.Code, w.Body)
	}
	admin := "Basic " + base64.StdEncoding.EncodeToString([]byte("default:"+creds.Passwords[0].Value))
	cfg := `{}`
	cd := digest.FromString(cfg)
	if w := do("POST", "/v2/team/app/blobs/uploads/?digest="+cd.String(), admin, "application/octet-stream", cfg); w.Code != 201 {
		t.Fatalf("push config: %d %s", w.Code, w.Body)
	}
	man := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cd.String() + `","size":2},"layers":[]}`
	for _, tag := range []string{"v1", "v2"} {
		if w := do("PUT", "/v2/team/app/manifests/"+tag, admin, "application/vnd.oci.image.manifest.v1+json", man); w.Code != 201 {
			t.Fatalf("push manifest: %d %s", w.Code, w.Body)
		}
	}
	if w := do("POST", "/v2/team/more/blobs/uploads/?digest="+cd.String(), admin, "application/octet-stream", cfg); w.Code != 201 {
		t.Fatalf("push a second repository: %d %s", w.Code, w.Body)
	}
	if w := do("GET", "/acr/v1/_catalog?n=1", admin, "", ""); w.Code != 200 || w.Header().Get("Link") != `</acr/v1/_catalog?last=team%2Fapp&n=1>; rel="next"` {
		t.Errorf("catalog page: %d %q %s", w.Code, w.Header().Get("Link"), w.Body)
	}
	for _, c := range []struct {
		method, path, scope string
		status              int
		body                string // in the admin's answer
	}{
		{"GET", "/acr/v1/_catalog", "registry:catalog:*", 200, `"repositories":["team/app","team/more"]`},
		{"GET", "/acr/v1/team/app", "repository:team/app:metadata_read", 200, `"tagCount":2`},
		{"GET", "/acr/v1/team/app/_tags?n=1", "repository:team/app:metadata_read", 200, `"name":"v1"`},
		{"GET", "/acr/v1/team/app/_tags/v2", "repository:team/app:metadata_read", 200, `"name":"v2"`},
		{"GET", "/acr/v1/team/app/_manifests", "repository:team/app:metadata_read", 200, `"tags":["v1","v2"]`},
		{"GET", "/acr/v1/team/none/_tags", "repository:team/none:metadata_read", 404, `"NAME_UNKNOWN"`},
		{"DELETE", "/acr/v1/team/app/_tags/v1", "repository:team/app:delete", 202, ``},
		{"DELETE", "/acr/v1/team/app/_tags/v1", "repository:team/app:delete", 404, `"MANIFEST_UNKNOWN"`},
		{"PUT", "/acr/v1/team/app", "", 405, `"UNSUPPORTED"`},
		{"DELETE", "/acr/v1/team/app", "repository:team/app:delete", 202, `"tagsDeleted":["v2"]`},
		{"GET", "/acr/v1/team/app", "repository:team/app:metadata_read", 404, `"NAME_UNKNOWN"`},
	} {
		if c.scope != "" {
			w := do(c.method, c.path, "", "", "")
			if ch := w.Header().Get("WWW-Authenticate"); w.Code != 401 || !strings.Contains(ch, `scope="`+c.scope+`"`) {
				t.Errorf("anonymous %s %s: %d %q, want 401 for %s", c.method, c.path, w.Code, ch, c.scope)
			}
		}
		w := do(c.method, c.path, admin, "", "")
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.body) {
			t.Errorf("admin %s %s: %d %s, want %d with %s", c.method, c.path, w.Code, w.Body, c.status, c.body)
		}
	}
}
