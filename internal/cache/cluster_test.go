package cache_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// TestFollowerReplicaVerifiesPeerBytes: a replica that follows another's
// fetch trusts the peer no more than an upstream. The lease of "another
// replica" is planted in the (real) store, naming a peer that streams the
// blob with one byte changed: the client never gets a complete body,
// nothing is stored, and nothing went upstream. Once the planted lease
// lapses, this replica takes the fetch over: the upstream's bytes, stored.
func TestFollowerReplicaVerifiesPeerBytes(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	blob := randomBytes(300 << 10)
	d := up.PushBlob(t, "library/app", blob)
	bad := append([]byte{blob[0] ^ 0xff}, blob[1:]...)
	var peerCalls atomic.Int32
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peerCalls.Add(1)
		if r.URL.Path != cache.PeerPath || r.Header.Get("Authorization") != "Bearer replica-token" ||
			r.URL.Query().Get("digest") != d.String() || r.URL.Query().Get("path") != "library/app" {
			http.Error(w, "unexpected request", http.StatusBadRequest)
			return
		}
		w.Header().Set("X-Arca-Blob-Size", strconv.Itoa(len(bad)))
		_, _ = w.Write(bad)
	}))
	defer peer.Close()

	e := newEnv(t, up.Host, time.Minute, nil)
	if err := e.cache.UseCluster(&cache.Cluster{Leases: e.meta, Holder: "this", Addr: "http://127.0.0.1:1", Client: peer.Client(),
		Token: func(context.Context) (string, error) { return "replica-token", nil }, LeaseTTL: time.Minute, Poll: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	key := cache.LeaseKeyOf(up.Host, "library/app", "", d)
	// The planted lease must outlive the first GET's look at it (seconds
	// on a loaded machine), or that GET takes the fetch itself.
	if _, got, err := e.meta.AcquireFetchLease(context.Background(), key, "other", peer.URL, 5*time.Second); err != nil || !got {
		t.Fatalf("plant lease: %v %v", got, err)
	}

	u := e.srv.URL + "/v2/cached/library/app/blobs/" + d.String()
	// The corrupted stream may be refused before the response headers
	// (the request fails) or cut short after them; either way the client
	// must never get a complete body.
	if resp, err := http.Get(u); err == nil {
		body, rerr := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && rerr == nil {
			t.Fatalf("a complete %d-byte body of a peer's corrupted stream was served (digest %s)", len(body), digest.FromBytes(body))
		}
	}
	if peerCalls.Load() == 0 {
		t.Fatal("the fetch did not follow the planted lease's holder")
	}
	if _, err := e.blobs.Stat(context.Background(), d); err != blobstore.ErrNotFound {
		t.Fatalf("after the corrupted peer stream: Stat = %v, want not found", err)
	}
	if n := up.Requests(http.MethodGet, "/blobs/"); n != 0 {
		t.Fatalf("%d upstream blob GETs while another replica held the lease", n)
	}

	// The planted lease lapses; the next fetch takes it and goes upstream.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := get(t, u)
		if r.status == http.StatusOK && r.err == nil && digest.FromBytes(r.body) == d {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the lease lapsed: %d %v", r.status, r.err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := up.Requests(http.MethodGet, "/blobs/"); n != 1 {
		t.Errorf("%d upstream blob GETs after the takeover, want 1", n)
	}
	e.cache.Wait()
	if _, err := e.blobs.Stat(context.Background(), d); err != nil {
		t.Errorf("taken-over fetch not stored: %v", err)
	}
}

// stageCounter counts the parts a replica stages in its (real) backend:
// every blob written to a blob store is staged first.
// With slow set, each Stage signals staging and then takes that long (a
// slow blob store write).
type stageCounter struct {
	blobstore.Backend
	n       atomic.Int32
	slow    time.Duration
	staging chan struct{}
}

func (s *stageCounter) Stage(ctx context.Context, id string) (blobstore.Part, error) {
	s.n.Add(1)
	if s.slow > 0 {
		s.staging <- struct{}{}
		time.Sleep(s.slow)
	}
	return s.Backend.Stage(ctx, id)
}

// followedHolder plants the lease of "another replica" whose peer endpoint
// streams blob and then, as a holder does when its fetch ends, stores it
// through its own handle on the shared blob directory (when store is set)
// and releases its lease. It returns this replica's environment (fetch
// leases lasting ttl), whose backend counts what this replica stages.
func followedHolder(t *testing.T, blob []byte, store bool, ttl time.Duration, counted *stageCounter) (*env, *upstreamreg.Registry, digest.Digest) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	d := up.PushBlob(t, "library/app", blob)
	dir := t.TempDir()
	shared, err := blobstore.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	counted.Backend = shared
	e := newEnvBlobs(t, prefixRules{prefix: "cached", host: up.Host}, time.Minute, counted, dir, up.Host)
	other, err := blobstore.NewFS(filepath.Join(dir, "blobs")) // the holder's handle on the same store
	if err != nil {
		t.Fatal(err)
	}
	key := cache.LeaseKeyOf(up.Host, "library/app", "", d)
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Arca-Blob-Size", strconv.Itoa(len(blob)))
		_, _ = w.Write(blob)
		if store {
			cs := content.Store{Blobs: other}
			cw, err := cs.NewWriter(r.Context(), d, int64(len(blob)))
			if err == nil {
				_, err = cw.Write(blob)
			}
			if err == nil {
				err = cw.Commit(r.Context(), d, int64(len(blob)))
			}
			if err != nil {
				t.Errorf("the holder's commit: %v", err)
			}
		}
		if err := e.meta.ReleaseFetchLease(context.Background(), key, "other"); err != nil {
			t.Errorf("the holder's release: %v", err)
		}
	}))
	t.Cleanup(peer.Close)
	if err := e.cache.UseCluster(&cache.Cluster{Leases: e.meta, Holder: "this", Addr: "http://127.0.0.1:1", Client: peer.Client(),
		Token: func(context.Context) (string, error) { return "replica-token", nil }, LeaseTTL: ttl, Poll: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, got, err := e.meta.AcquireFetchLease(context.Background(), key, "other", peer.URL, time.Minute); err != nil || !got {
		t.Fatalf("plant lease: %v %v", got, err)
	}
	return e, up, d
}

// TestFollowerReplicaStagesNothingTheHolderStores: a replica that followed
// another's fetch writes no byte to the shared blob store when the holder
// stored the blob: it only links it in the metadata.
func TestFollowerReplicaStagesNothingTheHolderStores(t *testing.T) {
	blob := randomBytes(300 << 10)
	counted := &stageCounter{}
	e, up, d := followedHolder(t, blob, true, time.Minute, counted)
	r := get(t, e.srv.URL+"/v2/cached/library/app/blobs/"+d.String())
	if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, blob) {
		t.Fatalf("client: %d %v (%d bytes)", r.status, r.err, len(r.body))
	}
	e.cache.Wait()
	if n := counted.n.Load(); n != 0 {
		t.Errorf("the follower staged %d parts of a blob the holder stored, want 0", n)
	}
	if size, err := e.meta.BlobSize(context.Background(), "default", "cached/library/app", d); err != nil || size != int64(len(blob)) {
		t.Errorf("the follower's repository link: %d, %v", size, err)
	}
	if n := up.Requests(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("%d upstream blob GETs while another replica fetched", n)
	}
}

// TestFollowerReplicaStoresWhatTheHolderDidNot: when the holder's commit
// did not land (it released its lease without the blob stored), the
// follower stores its own verified copy: the blob is there, with no
// upstream GET.
func TestFollowerReplicaStoresWhatTheHolderDidNot(t *testing.T) {
	blob := randomBytes(300 << 10)
	counted := &stageCounter{}
	e, up, d := followedHolder(t, blob, false, time.Minute, counted)
	r := get(t, e.srv.URL+"/v2/cached/library/app/blobs/"+d.String())
	if r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, blob) {
		t.Fatalf("client: %d %v (%d bytes)", r.status, r.err, len(r.body))
	}
	e.cache.Wait()
	if size, err := e.blobs.Stat(context.Background(), d); err != nil || size != int64(len(blob)) {
		t.Fatalf("the follower did not store the blob the holder failed to: %d, %v", size, err)
	}
	if n := counted.n.Load(); n != 1 {
		t.Errorf("the follower staged %d parts, want 1", n)
	}
	if r := get(t, e.srv.URL+"/v2/cached/library/app/blobs/"+d.String()); r.cache != "hit" || !bytes.Equal(r.body, blob) {
		t.Errorf("next pull: %q, %d bytes", r.cache, len(r.body))
	}
	if n := up.Requests(http.MethodGet, "/blobs/"); n != 0 {
		t.Errorf("%d upstream blob GETs, want 0", n)
	}
}

// TestFollowerReplicaStoringKeepsTheLease: a follower that stores its own
// verified copy (the holder did not) keeps the blob's fetch lease while
// its blob store write takes longer than the lease TTL, so another replica
// does not take the lease and fetch the blob from the upstream meanwhile.
func TestFollowerReplicaStoringKeepsTheLease(t *testing.T) {
	blob := randomBytes(300 << 10)
	const ttl = 300 * time.Millisecond
	counted := &stageCounter{slow: 2 * time.Second, staging: make(chan struct{}, 1)}
	e, up, d := followedHolder(t, blob, false, ttl, counted)
	done := make(chan result, 1)
	go func() { done <- get(t, e.srv.URL+"/v2/cached/library/app/blobs/"+d.String()) }()
	select {
	case <-counted.staging:
	case <-time.After(30 * time.Second):
		t.Fatal("the follower did not store its copy")
	}
	time.Sleep(3 * ttl) // the lease lapsed unless renewed
	key := cache.LeaseKeyOf(up.Host, "library/app", "", d)
	lease, got, err := e.meta.AcquireFetchLease(context.Background(), key, "another", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got {
		t.Errorf("another replica took the blob's fetch lease %s into a store slower than the TTL (%s): it would fetch the blob upstream", 3*ttl, ttl)
		if err := e.meta.ReleaseFetchLease(context.Background(), key, "another"); err != nil {
			t.Fatal(err)
		}
	} else if lease.Holder != "this" {
		t.Errorf("lease held by %q, want this replica", lease.Holder)
	}
	if r := <-done; r.err != nil || r.status != http.StatusOK || !bytes.Equal(r.body, blob) {
		t.Fatalf("client: %d %v (%d bytes)", r.status, r.err, len(r.body))
	}
	e.cache.Wait()
	if size, err := e.blobs.Stat(context.Background(), d); err != nil || size != int64(len(blob)) {
		t.Fatalf("the follower's copy: %d, %v", size, err)
	}
	if _, got, err := e.meta.AcquireFetchLease(context.Background(), key, "another", "", time.Minute); err != nil || !got {
		t.Errorf("after the store ended the lease is still held: %v %v", got, err)
	}
}

// TestManifestFetchLeaseRenewed: a manifest fetch slower than the fetch
// lease TTL keeps its lease (renewed as a blob fetch's is), so "another
// replica" asking for the lease meanwhile finds it held and would wait
// instead of sending a second upstream GET. Once the fetch ended the lease
// is free.
func TestManifestFetchLeaseRenewed(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.Push(t, "img", "v1", randomBytes(1000))
	leaseHeldThroughSlowUpstream(t, up, "/manifests/", "/v2/cached/img/manifests/v1", "miss",
		func(string) string { return cache.ManifestLeaseKeyOf("default", "cached/img", "v1") })
}

// TestBlobFetchLeaseRenewedWhileUpstreamAnswers: the same for a blob whose
// upstream takes longer than the TTL to answer at all (before any byte
// arrives).
func TestBlobFetchLeaseRenewedWhileUpstreamAnswers(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	d := up.PushBlob(t, "img", randomBytes(100<<10))
	leaseHeldThroughSlowUpstream(t, up, "/blobs/", "/v2/cached/img/blobs/"+d.String(), "miss",
		func(host string) string { return cache.LeaseKeyOf(host, "img", "", d) })
}

// leaseHeldThroughSlowUpstream GETs path from a replica whose upstream
// delays GETs of upstreamPath by several fetch lease TTLs and checks that
// the fetch's lease (key, given the upstream host) stays this replica's
// meanwhile, that the fetch succeeds (cache status want) with one upstream
// GET, and that the lease is free after it.
func leaseHeldThroughSlowUpstream(t *testing.T, up *upstreamreg.Registry, upstreamPath, path, want string, key func(host string) string) {
	proxy := upstreamreg.NewFaultProxy(t, up)
	const ttl = 300 * time.Millisecond
	const slow = 2 * time.Second // the upstream's answer, several TTLs
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: upstreamPath, Count: -1, Delay: slow})
	e := newEnv(t, proxy.Host(), time.Hour, nil)
	if err := e.cache.UseCluster(&cache.Cluster{Leases: e.meta, Holder: "this", Client: http.DefaultClient,
		Token: func(context.Context) (string, error) { return "replica-token", nil }, LeaseTTL: ttl, Poll: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	done := make(chan result, 1)
	go func() { done <- get(t, e.srv.URL+path) }()
	deadline := time.Now().Add(10 * time.Second)
	for proxy.Requests(http.MethodGet, upstreamPath) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the GET did not reach the upstream")
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * ttl) // the lease lapsed unless renewed
	k := key(proxy.Host())
	lease, got, err := e.meta.AcquireFetchLease(context.Background(), k, "other", "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got {
		t.Errorf("another replica took the fetch lease %s into a fetch slower than the TTL (%s): it would GET %s upstream again", 3*ttl, ttl, upstreamPath)
		if err := e.meta.ReleaseFetchLease(context.Background(), k, "other"); err != nil {
			t.Fatal(err)
		}
	} else if lease.Holder != "this" {
		t.Errorf("lease held by %q, want this replica", lease.Holder)
	}
	r := <-done
	if r.err != nil || r.status != http.StatusOK || r.cache != want {
		t.Fatalf("slow fetch: %d %q %v", r.status, r.cache, r.err)
	}
	e.cache.Wait()
	if _, got, err := e.meta.AcquireFetchLease(context.Background(), k, "other", "", time.Minute); err != nil || !got {
		t.Errorf("after the fetch ended the lease is still held: %v %v", got, err)
	}
	if n := proxy.Requests(http.MethodGet, upstreamPath); n != 1 {
		t.Errorf("%d upstream GETs, want 1", n)
	}
}
