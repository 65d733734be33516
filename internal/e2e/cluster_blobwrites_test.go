package e2e

import (
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// s3Writes is one replica's way to the cluster's bucket: a proxy in front
// of MinIO that counts the uploads carrying bytes (PUTs other than
// server-side copies: PutObject and UploadPart) and can refuse every write.
type s3Writes struct {
	url     string // the replica's --blobs URL
	uploads atomic.Int64
	bytes   atomic.Int64
	refuse  atomic.Bool
}

// proxyBlobs gives replica i of c its own counting proxy to the bucket.
func (c *cluster) proxyBlobs(t *testing.T, i int) *s3Writes {
	t.Helper()
	target, err := url.Parse(c.minio.Endpoint())
	if err != nil {
		t.Fatal(err)
	}
	w := &s3Writes{}
	rp := httputil.NewSingleHostReverseProxy(target) // the Host header stays: the request signature covers it
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if w.refuse.Load() && (r.Method == http.MethodPut || r.Method == http.MethodPost) {
			http.Error(rw, "writes refused by the test", http.StatusForbidden)
			return
		}
		if r.Method == http.MethodPut && r.Header.Get("X-Amz-Copy-Source") == "" {
			w.uploads.Add(1)
			n := r.ContentLength
			if v, err := strconv.ParseInt(r.Header.Get("X-Amz-Decoded-Content-Length"), 10, 64); err == nil {
				n = v // streaming signature: the body carries chunk signatures too
			}
			w.bytes.Add(n)
		}
		rp.ServeHTTP(rw, r)
	}))
	t.Cleanup(srv.Close)
	w.url = strings.Replace(c.blobs, "endpoint="+c.minio.Endpoint(), "endpoint=http://"+srv.Listener.Addr().String(), 1)
	if w.url == c.blobs {
		t.Fatalf("no endpoint in %s", c.blobs)
	}
	c.nodeBlobs[i] = w.url
	return w
}

// coldPullOnTwo starts a pull of blob on replica 0 and, once its fetch
// reached the upstream (proxy) and while the upstream stalls it, one on
// replica 1 (which follows replica 0's fetch); both must get the blob
// whole.
func coldPullOnTwo(t *testing.T, c *cluster, proxy *upstreamreg.FaultProxy, repo string, blob []byte) {
	t.Helper()
	errs := make(chan error, 2)
	go func() { errs <- pullBlob(c.nodes[0], repo, blob, nil) }()
	waitFor(t, 30*time.Second, "replica 0's fetch reaches the upstream", func() bool {
		return proxy.Requests(http.MethodGet, "/blobs/"+sha(blob)) > 0
	})
	go func() { errs <- pullBlob(c.nodes[1], repo, blob, nil) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestClusterColdBlobWrittenOnce: a cold blob pulled on two replicas at
// once is fetched once upstream and written to the shared bucket once:
// the replica that followed the other's fetch uploads nothing, it only
// links the blob the holder stored.
func TestClusterColdBlobWrittenOnce(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1360, "amd64", 3<<20+5)
	seedImage(t, up, "library/app", "v1", im)
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, CutAfter: 100 << 10, Stall: 4 * time.Second})
	c := newCluster(t, 3, false, "--insecure-upstream", proxy.Host())
	writes := []*s3Writes{c.proxyBlobs(t, 0), c.proxyBlobs(t, 1), c.proxyBlobs(t, 2)}
	c.startAll(t)
	c.nodes[0].cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	blob := im.Layers[0]
	for _, w := range writes {
		w.uploads.Store(0)
		w.bytes.Store(0)
	}
	coldPullOnTwo(t, c, proxy, "lib/app", blob)
	if f := c.nodes[1].metric(t, "arca_cache_peer_follows_total"); f != 1 {
		t.Fatalf("replica 1 followed %v fetches, want 1", f)
	}
	// Both fetches are done once the blob is a hit on both replicas.
	for _, a := range c.nodes[:2] {
		waitFor(t, 20*time.Second, "the blob stored and linked", func() bool {
			r := getCached(t, a.URL()+"/v2/lib/app/blobs/"+sha(blob), sha(blob))
			return r.Header.Get("X-Arca-Cache") == "hit"
		})
	}
	var uploads, bytes int64
	for i, w := range writes {
		t.Logf("replica %d: %d uploads to S3, %d bytes", i, w.uploads.Load(), w.bytes.Load())
		uploads += w.uploads.Load()
		bytes += w.bytes.Load()
	}
	if uploads != 1 || writes[0].uploads.Load() != 1 || bytes != int64(len(blob)) {
		t.Errorf("a cold blob pulled on two replicas: %d uploads (%d bytes) to S3, want 1 (%d bytes, by the fetching replica)", uploads, bytes, len(blob))
	}
	if n := upstreamGETs(up, "/blobs/"+sha(blob)); n != 1 {
		t.Errorf("%d upstream GETs, want 1", n)
	}
}

// TestClusterFollowerStoresWhenHolderCannot: the fetching replica's writes
// to the bucket fail (its S3 proxy refuses them) after its clients got the
// verified bytes. The replica that followed it stores its own verified
// copy: the blob is stored, with one upstream GET, and served as a hit
// everywhere, the failed replica included.
func TestClusterFollowerStoresWhenHolderCannot(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1361, "amd64", 1<<20+3)
	seedImage(t, up, "library/app", "v1", im)
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, CutAfter: 100 << 10, Stall: 4 * time.Second})
	c := newCluster(t, 3, false, "--insecure-upstream", proxy.Host())
	holder := c.proxyBlobs(t, 0)
	follower := c.proxyBlobs(t, 1)
	c.startAll(t)
	c.nodes[0].cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	blob := im.Layers[0]
	holder.refuse.Store(true)
	coldPullOnTwo(t, c, proxy, "lib/app", blob)
	if f := c.nodes[1].metric(t, "arca_cache_peer_follows_total"); f != 1 {
		t.Fatalf("replica 1 followed %v fetches, want 1\n%s\n%s", f, c.nodes[0].Logs(), c.nodes[1].Logs())
	}
	// The follower first: a pull on replica 2 before the follower stored
	// its copy could win the lease the holder released and fetch again.
	for _, i := range []int{1, 2, 0} {
		waitFor(t, 20*time.Second, "the follower's copy stored", func() bool {
			r := getCached(t, c.nodes[i].URL()+"/v2/lib/app/blobs/"+sha(blob), sha(blob))
			return r.Header.Get("X-Arca-Cache") == "hit"
		})
	}
	if n := follower.uploads.Load(); n != 1 {
		t.Errorf("the follower uploaded %d times, want 1", n)
	}
	if n := upstreamGETs(up, "/blobs/"+sha(blob)); n != 1 {
		t.Errorf("%d upstream GETs, want 1", n)
	}
}
