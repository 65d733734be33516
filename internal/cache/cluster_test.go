package cache_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/cache"
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
