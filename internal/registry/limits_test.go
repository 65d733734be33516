package registry

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
)

func newTestHandler(t *testing.T, o Options) (*Handler, *bytes.Buffer, string) {
	t.Helper()
	dir := t.TempDir()
	blobs, err := blobstore.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	meta, err := metadata.OpenSQLite(context.Background(), filepath.Join(dir, "arca.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { meta.Close() })
	var logs bytes.Buffer
	o.Blobs, o.Meta, o.Registry = blobs, meta, func(*http.Request) string { return "default" }
	o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return New(o), &logs, dir
}

// A client that left before its answer is a cancellation: no ERROR line,
// no 5xx status for the metrics.
func TestClientCancellationIsNotAServerError(t *testing.T) {
	h, logs, _ := newTestHandler(t, Options{})
	for _, tc := range []struct{ method, path string }{
		{http.MethodGet, "/v2/app/manifests/v1"},
		{http.MethodPost, "/v2/app/blobs/uploads/"},
		{http.MethodGet, "/v2/app/tags/list"},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		req := httptest.NewRequest(tc.method, tc.path, nil).WithContext(ctx)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Errorf("%s %s with the client gone: status %d, want no 5xx", tc.method, tc.path, rec.Code)
		}
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("cancellations logged as errors:\n%s", logs)
	}
}

// --max-blob-size: a monolithic push or a chunk past the limit is refused
// (413 SIZE_INVALID), and a session that went past it is removed.
func TestMaxBlobSize(t *testing.T) {
	h, _, dir := newTestHandler(t, Options{MaxBlobSize: 1000})
	srv := httptest.NewServer(h)
	defer srv.Close()
	big := bytes.Repeat([]byte("x"), 1001)
	r := do(t, "POST", srv.URL+"/v2/app/blobs/uploads/?digest="+digest.FromBytes(big).String(), nil, big)
	if r.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(r.body), "SIZE_INVALID") {
		t.Fatalf("monolithic push of 1001 bytes: %d %s", r.status, r.body)
	}
	ok := bytes.Repeat([]byte("y"), 1000)
	if r := do(t, "POST", srv.URL+"/v2/app/blobs/uploads/?digest="+digest.FromBytes(ok).String(), nil, ok); r.status != http.StatusCreated {
		t.Fatalf("1000 bytes: %d %s", r.status, r.body)
	}
	r = do(t, "POST", srv.URL+"/v2/app/blobs/uploads/", nil, nil)
	loc := srv.URL + r.header.Get("Location")
	if r := do(t, "PATCH", loc, nil, ok[:600]); r.status != http.StatusAccepted {
		t.Fatalf("first chunk: %d %s", r.status, r.body)
	}
	// Chunked without a length: the limit is enforced while reading.
	req, _ := http.NewRequest("PATCH", loc, struct{ *bytes.Reader }{bytes.NewReader(ok[:600])})
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunk past the limit: %d", res.StatusCode)
	}
	if r := do(t, "GET", loc, nil, nil); r.status != http.StatusNotFound {
		t.Errorf("session past the limit still exists: %d", r.status)
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, "blobs", "uploads", "*")); len(entries) != 0 {
		t.Errorf("staging left behind: %v", entries)
	}
}
