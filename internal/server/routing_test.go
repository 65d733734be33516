package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
