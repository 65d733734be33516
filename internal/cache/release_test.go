package cache_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/testutil/minio"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Verified bytes reach the client before they are made durable: when the
// commit fails after that (here the blob's directory cannot be created),
// the client still has the whole blob, nothing is visible in the store or
// the metadata, nothing is left staged, and the next request fetches again.
func TestCommitFailureAfterReleaseLeavesNothing(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(6 << 20)
	ld := digest.FromBytes(layer)
	up.Push(t, "img", "v1", layer)
	e := newEnv(t, up.Host, time.Hour, nil)
	// A file where the commit needs a directory: a real failure of the
	// rename step, after the bytes verified.
	shard := filepath.Join(e.dir, "blobs", "blobs", "sha256", ld.Encoded()[:2])
	if err := os.MkdirAll(filepath.Dir(shard), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(shard, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	url := e.srv.URL + "/v2/cached/img/blobs/" + ld.String()
	if r := get(t, url); r.err != nil || r.status != 200 || !bytes.Equal(r.body, layer) {
		t.Fatalf("client: %d %v (%d bytes)", r.status, r.err, len(r.body))
	}
	e.cache.Wait()
	ctx := context.Background()
	if _, err := e.blobs.Stat(ctx, ld); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("blob visible after a failed commit: %v", err)
	}
	if _, err := e.meta.BlobSize(ctx, "default", "cached/img", ld); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("blob recorded after a failed commit: %v", err)
	}
	if left, _ := os.ReadDir(filepath.Join(e.dir, "blobs", "uploads")); len(left) != 0 {
		t.Fatalf("staged uploads left: %d", len(left))
	}
	if err := os.Remove(shard); err != nil {
		t.Fatal(err)
	}
	if r := get(t, url); r.status != 200 || r.cache != "miss" || !bytes.Equal(r.body, layer) {
		t.Fatalf("after the fault: %d %q", r.status, r.cache)
	}
	e.cache.Wait()
	if n := up.Requests(http.MethodGet, "/blobs/"+ld.String()); n != 2 {
		t.Fatalf("upstream GETs = %d, want 2", n)
	}
	if _, err := e.blobs.Stat(ctx, ld); err != nil {
		t.Fatalf("not stored after the second fetch: %v", err)
	}
}

// A follower that falls behind the chunks kept in memory reads the rest
// from the staged file and still gets exactly the blob.
func TestSlowFollowerReadsStagedFile(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	e := newEnv(t, up.Host, time.Hour, nil)
	slowFollower(t, up, e)
}

// On S3 a part under construction cannot be read: the fetch spools the
// bytes locally (an unlinked file) for followers that fall behind memory.
func TestSlowFollowerS3ReadsSpool(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	srv, bucket := startS3(t)
	blobs := s3Blobs(t, srv, bucket, srv.Addr)
	e := newEnvBlobs(t, prefixRules{prefix: "cached", host: up.Host}, time.Hour, blobs, t.TempDir(), up.Host)
	ld := slowFollower(t, up, e)
	if size, err := blobs.Stat(context.Background(), ld); err != nil || size != 24<<20 {
		t.Fatalf("blob in S3: %d, %v", size, err)
	}
}

// startS3 starts MinIO with a fresh bucket; its credentials go into the
// environment, where the S3 backend finds them.
func startS3(t *testing.T) (*minio.Server, string) {
	t.Helper()
	srv := minio.Start(t)
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	bucket, err := srv.NewBucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return srv, bucket
}

// s3Blobs is the S3 backend on srv's bucket, reached at host (srv.Addr,
// or a proxy in front of it).
func s3Blobs(t *testing.T, srv *minio.Server, bucket, host string) blobstore.Backend {
	t.Helper()
	cfg, err := blobstore.ParseS3URL(strings.Replace(srv.BlobsURL(bucket, ""), srv.Addr, host, 1))
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blobstore.NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return blobs
}

// A slow backend delays when a fetched blob becomes durable, not its
// clients: with uploads to S3 held (a proxy in front of MinIO holds every
// PUT and POST), a cold GET still gets all 24 MiB, verified, at the
// upstream's pace; the blob appears in S3 only after the gate opens. Before the spool carried
// the fetch, the client stalled with the upload (at about 10 MiB: one
// multipart part plus the read-ahead).
func TestSlowBackendDoesNotHoldBackClients(t *testing.T) {
	up, srv, bucket, g, e := newGatedS3Env(t)
	layer := randomBytes(24 << 20)
	ld := digest.FromBytes(layer)
	up.Push(t, "img", "v1", layer)

	g.hold()
	got := make(chan result, 1)
	go func() { got <- get(t, e.srv.URL+"/v2/cached/img/blobs/"+ld.String()) }()
	select {
	case r := <-got:
		if r.err != nil || r.status != 200 || !bytes.Equal(r.body, layer) {
			t.Errorf("client while S3 is held: %d %v (%d bytes)", r.status, r.err, len(r.body))
		}
	case <-time.After(time.Minute):
		t.Errorf("client not done after a minute while S3 is held")
		defer func() { <-got }()
	}
	ctx := context.Background()
	direct := s3Blobs(t, srv, bucket, srv.Addr)
	if _, err := direct.Stat(ctx, ld); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("blob in S3 while the upload is held: %v", err)
	}
	g.release()
	e.cache.Wait()
	if size, err := direct.Stat(ctx, ld); err != nil || size != int64(len(layer)) {
		t.Fatalf("blob in S3 after the gate opened: %d, %v", size, err)
	}
	if r := get(t, e.srv.URL+"/v2/cached/img/blobs/"+ld.String()); r.status != 200 || r.cache != "hit" || !bytes.Equal(r.body, layer) {
		t.Fatalf("after the upload: %d %q", r.status, r.cache)
	}
}

// On S3 too, an upload that fails after the release leaves the client
// with verified bytes and records nothing: no blob, no link; the next
// request fetches again.
func TestS3UploadFailureAfterReleaseLeavesNothing(t *testing.T) {
	up, srv, bucket, g, e := newGatedS3Env(t)
	layer := randomBytes(12 << 20)
	ld := digest.FromBytes(layer)
	up.Push(t, "img", "v1", layer)
	url := e.srv.URL + "/v2/cached/img/blobs/" + ld.String()
	g.setRefuse(true)
	if r := get(t, url); r.err != nil || r.status != 200 || !bytes.Equal(r.body, layer) {
		t.Fatalf("client: %d %v (%d bytes)", r.status, r.err, len(r.body))
	}
	e.cache.Wait()
	ctx := context.Background()
	if _, err := s3Blobs(t, srv, bucket, srv.Addr).Stat(ctx, ld); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("blob visible after a failed upload: %v", err)
	}
	if _, err := e.meta.BlobSize(ctx, "default", "cached/img", ld); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("blob recorded after a failed upload: %v", err)
	}
	g.setRefuse(false)
	if r := get(t, url); r.status != 200 || r.cache != "miss" || !bytes.Equal(r.body, layer) {
		t.Fatalf("after the fault: %d %q", r.status, r.cache)
	}
	e.cache.Wait()
	if n := up.Requests(http.MethodGet, "/blobs/"+ld.String()); n != 2 {
		t.Fatalf("upstream GETs = %d, want 2", n)
	}
	if r := get(t, url); r.status != 200 || r.cache != "hit" {
		t.Fatalf("after the second fetch: %d %q", r.status, r.cache)
	}
}

// gate is a reverse proxy to S3 that can hold uploads (PUT and POST
// requests wait, their connections open, until release) or refuse them;
// reads pass.
type gate struct {
	addr   string
	mu     sync.Mutex
	opened chan struct{} // closed while uploads pass
	refuse bool          // answer uploads 403 instead
}

// newGatedS3Env is a cache over a real upstream whose blobs go to MinIO
// through a gate that a test can hold or make refuse (uploads only).
func newGatedS3Env(t *testing.T) (*upstreamreg.Registry, *minio.Server, string, *gate, *env) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	srv, bucket := startS3(t)
	g := startGate(t, srv.Addr)
	e := newEnvBlobs(t, prefixRules{prefix: "cached", host: up.Host}, time.Hour, s3Blobs(t, srv, bucket, g.addr), t.TempDir(), up.Host)
	return up, srv, bucket, g, e
}

func startGate(t *testing.T, to string) *gate {
	g := &gate{opened: make(chan struct{})}
	close(g.opened)
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: to})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut || r.Method == http.MethodPost {
			g.mu.Lock()
			opened, refuse := g.opened, g.refuse
			g.mu.Unlock()
			if refuse {
				w.WriteHeader(http.StatusForbidden)
				return
			}
			<-opened
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	g.addr = srv.Listener.Addr().String()
	return g
}

func (g *gate) hold() {
	g.mu.Lock()
	g.opened = make(chan struct{})
	g.mu.Unlock()
}

func (g *gate) setRefuse(on bool) {
	g.mu.Lock()
	g.refuse = on
	g.mu.Unlock()
}

func (g *gate) release() {
	g.mu.Lock()
	close(g.opened)
	g.mu.Unlock()
}

func slowFollower(t *testing.T, up *upstreamreg.Registry, e *env) digest.Digest {
	layer := randomBytes(24 << 20)
	ld := digest.FromBytes(layer)
	up.Push(t, "img", "v1", layer)
	res, err := http.Get(e.srv.URL + "/v2/cached/img/blobs/" + ld.String())
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	// Let the fetch run far ahead (it does not wait for its client).
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(res.Body, head); err != nil {
		t.Fatal(err)
	}
	e.cache.Wait()
	rest, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest...); !bytes.Equal(got, layer) {
		t.Fatalf("slow follower got %d bytes, digest %s", len(got), digest.FromBytes(got))
	}
	return ld
}
