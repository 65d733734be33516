package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
)

func newTestServer(t *testing.T) *httptest.Server {
	t.Helper()
	return newWrappedTestServer(t, func(h http.Handler) http.Handler { return h })
}

// newWrappedTestServer is newTestServer with wrap around the handler.
func newWrappedTestServer(t *testing.T, wrap func(http.Handler) http.Handler) *httptest.Server {
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
	h := New(Options{Blobs: blobs, Meta: meta, Registry: func(*http.Request) string { return "default" }})
	srv := httptest.NewServer(wrap(h))
	t.Cleanup(srv.Close)
	return srv
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, hdr map[string]string, body []byte) resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return resp{res.StatusCode, res.Header, b}
}

// errorCode extracts the first OCI error code from a body.
func errorCode(b []byte) string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if json.Unmarshal(b, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func pushBlob(t *testing.T, base, repo string, b []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(b)
	r := do(t, "POST", base+"/v2/"+repo+"/blobs/uploads/?digest="+d.String(), nil, b)
	if r.status != http.StatusCreated {
		t.Fatalf("push blob: %d %s", r.status, r.body)
	}
	return d
}

func imageManifest(config, layer digest.Digest, configSize, layerSize int) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":%q,"size":%d}]}`,
		oci.MediaTypeOCIManifest, config, configSize, layer, layerSize))
}

// pushImage pushes a config, a layer and a manifest tagged tag.
func pushImage(t *testing.T, base, repo, tag string) (digest.Digest, []byte) {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := randomBytes(1000)
	cd, ld := pushBlob(t, base, repo, cfg), pushBlob(t, base, repo, layer)
	m := imageManifest(cd, ld, len(cfg), len(layer))
	r := do(t, "PUT", base+"/v2/"+repo+"/manifests/"+tag, map[string]string{"Content-Type": oci.MediaTypeOCIManifest}, m)
	if r.status != http.StatusCreated {
		t.Fatalf("push manifest: %d %s", r.status, r.body)
	}
	return digest.FromBytes(m), m
}

func TestPushPullRoundTrip(t *testing.T) {
	srv := newTestServer(t)
	md, m := pushImage(t, srv.URL, "a/b/c", "v1")
	for _, ref := range []string{"v1", md.String()} {
		r := do(t, "GET", srv.URL+"/v2/a/b/c/manifests/"+ref, nil, nil)
		if r.status != 200 || !bytes.Equal(r.body, m) {
			t.Fatalf("GET manifest %s: %d", ref, r.status)
		}
		if r.header.Get("Docker-Content-Digest") != md.String() || r.header.Get("Content-Type") != oci.MediaTypeOCIManifest {
			t.Fatalf("headers: %v", r.header)
		}
		h := do(t, "HEAD", srv.URL+"/v2/a/b/c/manifests/"+ref, nil, nil)
		if h.status != 200 || h.header.Get("Content-Length") != fmt.Sprint(len(m)) || len(h.body) != 0 {
			t.Fatalf("HEAD manifest: %d %v", h.status, h.header)
		}
	}
}

func TestBlobRange(t *testing.T) {
	srv := newTestServer(t)
	b := randomBytes(10000)
	d := pushBlob(t, srv.URL, "r", b)
	r := do(t, "GET", srv.URL+"/v2/r/blobs/"+d.String(), map[string]string{"Range": "bytes=100-199"}, nil)
	if r.status != http.StatusPartialContent || !bytes.Equal(r.body, b[100:200]) {
		t.Fatalf("range: %d len %d", r.status, len(r.body))
	}
	// A blob is only visible in the repository it was pushed to.
	if r := do(t, "GET", srv.URL+"/v2/other/blobs/"+d.String(), nil, nil); r.status != 404 || errorCode(r.body) != "BLOB_UNKNOWN" {
		t.Fatalf("other repo: %d %s", r.status, r.body)
	}
}

func TestChunkedUpload(t *testing.T) {
	srv := newTestServer(t)
	b := randomBytes(3000)
	r := do(t, "POST", srv.URL+"/v2/chunky/blobs/uploads/", nil, nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("start: %d", r.status)
	}
	loc := srv.URL + r.header.Get("Location")
	r = do(t, "PATCH", loc, map[string]string{"Content-Range": "0-999", "Content-Type": "application/octet-stream"}, b[:1000])
	if r.status != http.StatusAccepted || r.header.Get("Range") != "0-999" {
		t.Fatalf("patch 1: %d %v %s", r.status, r.header, r.body)
	}
	// Out-of-order chunk.
	r = do(t, "PATCH", loc, map[string]string{"Content-Range": "2000-2999"}, b[2000:])
	if r.status != http.StatusRequestedRangeNotSatisfiable {
		t.Fatalf("out of order chunk: %d", r.status)
	}
	r = do(t, "PATCH", loc, map[string]string{"Content-Range": "1000-1999"}, b[1000:2000])
	if r.status != http.StatusAccepted {
		t.Fatalf("patch 2: %d %s", r.status, r.body)
	}
	if r = do(t, "GET", loc, nil, nil); r.status != http.StatusNoContent || r.header.Get("Range") != "0-1999" {
		t.Fatalf("status: %d %v", r.status, r.header)
	}
	d := digest.FromBytes(b)
	r = do(t, "PUT", loc+"?digest="+d.String(), nil, b[2000:])
	if r.status != http.StatusCreated || r.header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("finish: %d %s", r.status, r.body)
	}
	got := do(t, "GET", srv.URL+"/v2/chunky/blobs/"+d.String(), nil, nil)
	if !bytes.Equal(got.body, b) {
		t.Fatal("content differs")
	}
	// The session is gone.
	if r = do(t, "GET", loc, nil, nil); r.status != 404 || errorCode(r.body) != "BLOB_UPLOAD_UNKNOWN" {
		t.Fatalf("after finish: %d %s", r.status, r.body)
	}
}

func TestCancelUploadAndMount(t *testing.T) {
	srv := newTestServer(t)
	r := do(t, "POST", srv.URL+"/v2/x/blobs/uploads/", nil, nil)
	loc := srv.URL + r.header.Get("Location")
	if r = do(t, "DELETE", loc, nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("cancel: %d", r.status)
	}
	if r = do(t, "PATCH", loc, nil, []byte("x")); r.status != 404 {
		t.Fatalf("patch after cancel: %d", r.status)
	}
	d := pushBlob(t, srv.URL, "src/repo", []byte("shared layer"))
	r = do(t, "POST", srv.URL+"/v2/dst/blobs/uploads/?mount="+d.String()+"&from=src/repo", nil, nil)
	if r.status != http.StatusCreated {
		t.Fatalf("mount: %d %s", r.status, r.body)
	}
	if g := do(t, "GET", srv.URL+"/v2/dst/blobs/"+d.String(), nil, nil); string(g.body) != "shared layer" {
		t.Fatalf("mounted blob: %d", g.status)
	}
	// Mount from a repository without the blob falls back to a session.
	r = do(t, "POST", srv.URL+"/v2/dst2/blobs/uploads/?mount="+d.String()+"&from=nowhere", nil, nil)
	if r.status != http.StatusAccepted || r.header.Get("Location") == "" {
		t.Fatalf("mount fallback: %d", r.status)
	}
}

func TestTagsAndCatalogPagination(t *testing.T) {
	srv := newTestServer(t)
	for _, tag := range []string{"c", "a", "b", "d"} {
		pushImage(t, srv.URL, "pag", tag)
	}
	r := do(t, "GET", srv.URL+"/v2/pag/tags/list?n=2", nil, nil)
	var tl struct{ Tags []string }
	json.Unmarshal(r.body, &tl)
	if strings.Join(tl.Tags, ",") != "a,b" || !strings.Contains(r.header.Get("Link"), "last=b") {
		t.Fatalf("page 1: %s %q", r.body, r.header.Get("Link"))
	}
	r = do(t, "GET", srv.URL+"/v2/pag/tags/list?n=2&last=b", nil, nil)
	json.Unmarshal(r.body, &tl)
	if strings.Join(tl.Tags, ",") != "c,d" || r.header.Get("Link") != "" {
		t.Fatalf("page 2: %s %q", r.body, r.header.Get("Link"))
	}
	if r = do(t, "GET", srv.URL+"/v2/nope/tags/list", nil, nil); r.status != 404 || errorCode(r.body) != "NAME_UNKNOWN" {
		t.Fatalf("unknown repo: %d %s", r.status, r.body)
	}
	pushImage(t, srv.URL, "another", "x")
	r = do(t, "GET", srv.URL+"/v2/_catalog?n=1", nil, nil)
	if !strings.Contains(string(r.body), `"another"`) || !strings.Contains(r.header.Get("Link"), "last=another") {
		t.Fatalf("catalog: %s %q", r.body, r.header.Get("Link"))
	}
}

func TestDeleteManifestAndTag(t *testing.T) {
	srv := newTestServer(t)
	md, _ := pushImage(t, srv.URL, "del", "t1")
	base := srv.URL + "/v2/del/manifests/"
	do(t, "PUT", base+"t2", map[string]string{"Content-Type": oci.MediaTypeOCIManifest}, do(t, "GET", base+"t1", nil, nil).body)
	if r := do(t, "DELETE", base+"t2", nil, nil); r.status != http.StatusAccepted {
		t.Fatalf("delete tag: %d", r.status)
	}
	if r := do(t, "GET", base+"t1", nil, nil); r.status != 200 {
		t.Fatalf("t1 after deleting t2: %d", r.status)
	}
	if r := do(t, "DELETE", base+md.String(), nil, nil); r.status != http.StatusAccepted {
		t.Fatalf("delete manifest: %d", r.status)
	}
	for _, ref := range []string{"t1", md.String()} {
		if r := do(t, "GET", base+ref, nil, nil); r.status != 404 || errorCode(r.body) != "MANIFEST_UNKNOWN" {
			t.Fatalf("after delete %s: %d %s", ref, r.status, r.body)
		}
	}
}

func TestReferrers(t *testing.T) {
	srv := newTestServer(t)
	subject, subjectBytes := pushImage(t, srv.URL, "sig", "v1")
	empty := pushBlob(t, srv.URL, "sig", []byte("{}"))
	sigLayer := pushBlob(t, srv.URL, "sig", []byte("signature"))
	art := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"artifactType":"application/vnd.cncf.notary.signature","config":{"mediaType":%q,"digest":%q,"size":2},"layers":[{"mediaType":"application/jose+json","digest":%q,"size":9}],"subject":{"mediaType":%q,"digest":%q,"size":%d},"annotations":{"k":"v"}}`,
		oci.MediaTypeOCIManifest, oci.MediaTypeOCIEmptyJSON, empty, sigLayer, oci.MediaTypeOCIManifest, subject, len(subjectBytes))
	ad := digest.FromString(art)
	r := do(t, "PUT", srv.URL+"/v2/sig/manifests/"+ad.String(), map[string]string{"Content-Type": oci.MediaTypeOCIManifest}, []byte(art))
	if r.status != 201 || r.header.Get("OCI-Subject") != subject.String() {
		t.Fatalf("push referrer: %d %v %s", r.status, r.header, r.body)
	}
	r = do(t, "GET", srv.URL+"/v2/sig/referrers/"+subject.String(), nil, nil)
	var idx oci.Index
	if err := json.Unmarshal(r.body, &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("referrers: %d %s", r.status, r.body)
	}
	got := idx.Manifests[0]
	if got.Digest != ad || got.ArtifactType != "application/vnd.cncf.notary.signature" || got.Annotations["k"] != "v" || got.Size != int64(len(art)) {
		t.Fatalf("descriptor: %+v", got)
	}
	r = do(t, "GET", srv.URL+"/v2/sig/referrers/"+subject.String()+"?artifactType=application/spdx%2Bjson", nil, nil)
	json.Unmarshal(r.body, &idx)
	if r.status != 200 || len(idx.Manifests) != 0 || r.header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered: %d %s %v", r.status, r.body, r.header)
	}
	// No referrers: an empty index, never 404.
	r = do(t, "GET", srv.URL+"/v2/sig/referrers/"+digest.FromString("none").String(), nil, nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"manifests":[]`) {
		t.Fatalf("empty: %d %s", r.status, r.body)
	}
}

// Bad input: each gets the spec's error and stores nothing.
func TestBadInput(t *testing.T) {
	srv := newTestServer(t)
	cfg := pushBlob(t, srv.URL, "bad", []byte("{}"))
	good := imageManifest(cfg, cfg, 2, 2)
	ct := map[string]string{"Content-Type": oci.MediaTypeOCIManifest}
	big := append([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":"`), bytes.Repeat([]byte("a"), 5<<20)...)
	big = append(big, []byte(`"}}`)...)
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		body               []byte
		status             int
		code               string
	}{
		{"manifest digest mismatch", "PUT", "/v2/bad/manifests/" + digest.FromString("x").String(), ct, good, 400, "DIGEST_INVALID"},
		{"invalid json", "PUT", "/v2/bad/manifests/t", ct, []byte("{not json"), 400, "MANIFEST_INVALID"},
		{"unknown media type", "PUT", "/v2/bad/manifests/t", map[string]string{"Content-Type": "application/x-unknown"}, []byte(`{"schemaVersion":2,"mediaType":"application/x-unknown"}`), 400, "MANIFEST_INVALID"},
		{"content type mismatch", "PUT", "/v2/bad/manifests/t", map[string]string{"Content-Type": oci.MediaTypeOCIIndex}, good, 400, "MANIFEST_INVALID"},
		{"oversized manifest", "PUT", "/v2/bad/manifests/t", ct, big, 413, "MANIFEST_INVALID"},
		{"missing layer", "PUT", "/v2/bad/manifests/t", ct, imageManifest(cfg, digest.FromString("absent"), 2, 6), 400, "MANIFEST_BLOB_UNKNOWN"},
		{"schema 1", "PUT", "/v2/bad/manifests/t", map[string]string{"Content-Type": oci.MediaTypeDockerSchema1JS}, []byte(`{"schemaVersion":1}`), 400, "MANIFEST_INVALID"},
		{"wrong blob digest", "POST", "/v2/bad/blobs/uploads/?digest=" + digest.FromString("other").String(), nil, []byte("content"), 400, "DIGEST_INVALID"},
		{"malformed digest", "GET", "/v2/bad/blobs/sha256:zz", nil, nil, 400, "DIGEST_INVALID"},
		{"traversal in digest", "GET", "/v2/bad/blobs/sha256:..%2f..%2fetc", nil, nil, 400, "DIGEST_INVALID"},
		{"uppercase name", "GET", "/v2/Bad/tags/list", nil, nil, 400, "NAME_INVALID"},
		{"traversal in name", "GET", "/v2/a/%2e%2e/b/tags/list", nil, nil, 400, "NAME_INVALID"},
		{"dot segment name", "GET", "/v2/a/./b/manifests/x", nil, nil, 400, "NAME_INVALID"},
		{"traversal in upload id", "PATCH", "/v2/bad/blobs/uploads/..%2f..%2fx", nil, []byte("x"), 404, "BLOB_UPLOAD_UNKNOWN"},
		{"unknown upload id", "PUT", "/v2/bad/blobs/uploads/0123456789abcdef?digest=" + cfg.String(), nil, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"bad tag", "PUT", "/v2/bad/manifests/-bad", ct, good, 400, "DIGEST_INVALID"},
		// A manifest that cannot exist is not found, as distribution answers.
		{"GET invalid reference", "GET", "/v2/bad/manifests/.INVALID_MANIFEST_NAME", nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"GET malformed digest reference", "GET", "/v2/bad/manifests/sha256:zz", nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"bad pagination", "GET", "/v2/bad/tags/list?n=-1", nil, nil, 400, "PAGINATION_NUMBER_INVALID"},
		{"method", "POST", "/v2/bad/manifests/t", nil, nil, 405, "UNSUPPORTED"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, c.method, srv.URL+c.path, c.hdr, c.body)
			if r.status != c.status || errorCode(r.body) != c.code {
				t.Fatalf("got %d %s, want %d %s", r.status, r.body, c.status, c.code)
			}
		})
	}
	// Nothing was stored: no tags in "bad", and the wrong-digest blob is absent.
	if r := do(t, "GET", srv.URL+"/v2/bad/tags/list", nil, nil); !strings.Contains(string(r.body), `"tags":[]`) {
		t.Fatalf("tags after bad input: %s", r.body)
	}
	if r := do(t, "HEAD", srv.URL+"/v2/bad/blobs/"+digest.FromString("content").String(), nil, nil); r.status != 404 {
		t.Fatalf("blob with wrong digest is visible: %d", r.status)
	}
}

// Error answers to HEAD carry the Content-Length of the body a GET gets;
// HEAD by a reference that cannot exist is 404.
func TestHeadErrorsHaveContentLength(t *testing.T) {
	srv := newTestServer(t)
	pushImage(t, srv.URL, "h/img", "v1")
	for _, path := range []string{
		"/v2/h/img/manifests/.INVALID_MANIFEST_NAME",
		"/v2/h/img/manifests/absent",
		"/v2/h/img/blobs/" + digest.FromString("absent").String(),
		"/v2/h/none/manifests/v1",
	} {
		get := do(t, "GET", srv.URL+path, nil, nil)
		head := do(t, "HEAD", srv.URL+path, nil, nil)
		if head.status != 404 || get.status != 404 {
			t.Errorf("%s: GET %d, HEAD %d, want 404", path, get.status, head.status)
		}
		if cl := head.header.Get("Content-Length"); cl == "" || cl != fmt.Sprint(len(get.body)) {
			t.Errorf("HEAD %s: Content-Length %q, want %d (the GET body's)", path, cl, len(get.body))
		}
	}
}

// A PUT whose body is shorter than its Content-Length commits nothing.
func TestTruncatedUpload(t *testing.T) {
	srv := newTestServer(t)
	b := randomBytes(1 << 20)
	d := digest.FromBytes(b)
	r := do(t, "POST", srv.URL+"/v2/trunc/blobs/uploads/", nil, nil)
	loc := srv.URL + r.header.Get("Location")
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", loc+"?digest="+d.String(), pr)
	req.ContentLength = int64(len(b))
	go func() {
		pw.Write(b[:len(b)/2])
		pw.CloseWithError(io.ErrUnexpectedEOF)
	}()
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		if res.StatusCode == http.StatusCreated {
			t.Fatal("truncated upload was accepted")
		}
	}
	if r := do(t, "HEAD", srv.URL+"/v2/trunc/blobs/"+d.String(), nil, nil); r.status != 404 {
		t.Fatalf("truncated blob visible: %d", r.status)
	}
	// The session survives: the client may resume from what arrived.
	if r := do(t, "GET", loc, nil, nil); r.status != http.StatusNoContent {
		t.Fatalf("session after truncation: %d", r.status)
	}
}

func TestIndexNeedsChildren(t *testing.T) {
	srv := newTestServer(t)
	child, m := pushImage(t, srv.URL, "multi", "amd64")
	idx := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"manifests":[{"mediaType":%q,"digest":%q,"size":%d,"platform":{"os":"linux","architecture":"amd64"}}]}`,
		oci.MediaTypeOCIIndex, oci.MediaTypeOCIManifest, child, len(m))
	r := do(t, "PUT", srv.URL+"/v2/multi/manifests/latest", map[string]string{"Content-Type": oci.MediaTypeOCIIndex}, []byte(idx))
	if r.status != 201 {
		t.Fatalf("index: %d %s", r.status, r.body)
	}
	missing := strings.Replace(idx, child.String(), digest.FromString("nope").String(), 1)
	r = do(t, "PUT", srv.URL+"/v2/multi/manifests/bad", map[string]string{"Content-Type": oci.MediaTypeOCIIndex}, []byte(missing))
	if r.status != 400 || errorCode(r.body) != "MANIFEST_BLOB_UNKNOWN" {
		t.Fatalf("index with missing child: %d %s", r.status, r.body)
	}
}

func TestDotSegmentsRejected(t *testing.T) {
	srv := newTestServer(t)
	for _, p := range []string{"/v2/a//b/tags/list", "/v2/../../etc/passwd/manifests/latest", "/v2/x/blobs/sha256:../../../../etc/passwd", "/v2/x/blobs/uploads/../../../../pwned", "/v2/x/./y/manifests/t"} {
		req, _ := http.NewRequest("GET", srv.URL+"/", nil)
		req.URL.Opaque = p // sent as written, not cleaned by the client
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode/100 != 4 || errorCode(b) == "" {
			t.Errorf("%s: %d %s", p, res.StatusCode, b)
		}
	}
}

// Two requests writing one upload session at once: the one that records
// its chunk first wins (a conditional update of the session's row: the
// offset it started from must still hold), the other is refused and its
// bytes are dropped, never interleaved. No lock is held across replicas.
func TestConcurrentPatchOneWins(t *testing.T) {
	// The second PATCH goes once the server reads the first one's body:
	// by then the first has resumed the session (sent at once, it could
	// reach the handler after the second had finished, and append).
	reading := make(chan struct{})
	srv := newWrappedTestServer(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Test-Request") == "first" {
				r.Body = &firstRead{ReadCloser: r.Body, reading: reading}
			}
			h.ServeHTTP(w, r)
		})
	})
	r := do(t, "POST", srv.URL+"/v2/busy/blobs/uploads/", nil, nil)
	loc := srv.URL + r.header.Get("Location")
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PATCH", loc, pr)
	req.Header.Set("X-Test-Request", "first")
	done := make(chan int, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		res.Body.Close()
		done <- res.StatusCode
	}()
	first := []byte("first chunk, still open")
	pw.Write(first)
	select {
	case <-reading:
	case <-time.After(30 * time.Second):
		t.Fatal("the server never read the first PATCH's body")
	}
	second := do(t, "PATCH", loc, nil, []byte("second"))
	pw.Close()
	if second.status != http.StatusAccepted {
		t.Fatalf("second PATCH (finished first): %d %s", second.status, second.body)
	}
	if st := <-done; st != http.StatusConflict {
		t.Fatalf("first PATCH (finished last): %d, want 409", st)
	}
	if r := do(t, "GET", loc, nil, nil); r.header.Get("Range") != "0-5" {
		t.Fatalf("session holds %q, want only the winning chunk", r.header.Get("Range"))
	}
	d := digest.FromString("second")
	if r := do(t, "PUT", loc+"?digest="+d.String(), nil, nil); r.status != http.StatusCreated {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
}

// firstRead closes reading when the first bytes are read from the body.
type firstRead struct {
	io.ReadCloser
	reading chan struct{}
	once    sync.Once
}

func (f *firstRead) Read(p []byte) (int, error) {
	n, err := f.ReadCloser.Read(p)
	if n > 0 {
		f.once.Do(func() { close(f.reading) })
	}
	return n, err
}

// distribution-spec 1.2 draft: a push by digest tags with each ?tag= and
// answers OCI-Tag; a push by tag with ?digest-algorithm=sha512 is addressed
// (Docker-Content-Digest, Location) with sha512.
func TestManifestPushTagsAndDigestAlgorithm(t *testing.T) {
	srv := newTestServer(t)
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := randomBytes(100)
	m := imageManifest(pushBlob(t, srv.URL, "p/img", cfg), pushBlob(t, srv.URL, "p/img", layer), len(cfg), len(layer))
	ct := map[string]string{"Content-Type": oci.MediaTypeOCIManifest}
	d := digest.FromBytes(m)

	r := do(t, "PUT", srv.URL+"/v2/p/img/manifests/"+d.String()+"?tag=v1&tag=latest", ct, m)
	if r.status != 201 || fmt.Sprint(r.header.Values("OCI-Tag")) != "[v1 latest]" {
		t.Fatalf("PUT by digest with ?tag=: %d OCI-Tag %v %s", r.status, r.header.Values("OCI-Tag"), r.body)
	}
	for _, tag := range []string{"v1", "latest"} {
		if g := do(t, "GET", srv.URL+"/v2/p/img/manifests/"+tag, nil, nil); g.status != 200 || g.header.Get("Docker-Content-Digest") != d.String() {
			t.Fatalf("GET %s: %d %v", tag, g.status, g.header)
		}
	}
	if r := do(t, "PUT", srv.URL+"/v2/p/img/manifests/"+d.String()+"?tag=-bad", ct, m); r.status != 400 || errorCode(r.body) != "TAG_INVALID" {
		t.Fatalf("PUT with an invalid ?tag=: %d %s", r.status, r.body)
	}

	d512 := digest.SHA512.FromBytes(m)
	r = do(t, "PUT", srv.URL+"/v2/p/img/manifests/v512?digest-algorithm=sha512", ct, m)
	if r.status != 201 || r.header.Get("Docker-Content-Digest") != d512.String() || r.header.Get("Location") != "/v2/p/img/manifests/"+d512.String() {
		t.Fatalf("PUT by tag with digest-algorithm=sha512: %d %v %s", r.status, r.header, r.body)
	}
	for _, ref := range []string{"v512", d512.String()} {
		g := do(t, "GET", srv.URL+"/v2/p/img/manifests/"+ref, nil, nil)
		if g.status != 200 || g.header.Get("Docker-Content-Digest") != d512.String() || !bytes.Equal(g.body, m) {
			t.Fatalf("GET %s: %d %v", ref, g.status, g.header)
		}
	}
	if r := do(t, "PUT", srv.URL+"/v2/p/img/manifests/"+d512.String(), ct, m); r.status != 201 || r.header.Get("Docker-Content-Digest") != d512.String() {
		t.Fatalf("PUT by sha512 digest: %d %v", r.status, r.header)
	}
	if r := do(t, "PUT", srv.URL+"/v2/p/img/manifests/"+d.String()+"?digest-algorithm=sha512", ct, m); r.status != 400 || errorCode(r.body) != "DIGEST_INVALID" {
		t.Fatalf("PUT by sha256 digest with digest-algorithm=sha512: %d %s", r.status, r.body)
	}
}
