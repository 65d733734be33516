package e2e

import (
	"github.com/arcacache/arca/internal/testutil/upstreamreg"

	"context"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// rrProxy spreads requests over replicas round-robin, each request to the
// next live one (no sticky sessions), as a load balancer without affinity
// does; a replica that refuses a connection is taken out.
type rrProxy struct {
	backends []string
	dead     []atomic.Bool
	next     atomic.Int64
	srv      *httptest.Server
	mu       sync.Mutex
	served   map[string]int // requests per backend
}

func newRRProxy(t testing.TB, c *cluster) *rrProxy {
	p := &rrProxy{served: map[string]int{}}
	for _, a := range c.nodes {
		p.backends = append(p.backends, a.Addr)
	}
	p.dead = make([]atomic.Bool, len(p.backends))
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			for range p.backends {
				i := int(p.next.Add(1)) % len(p.backends)
				if !p.dead[i].Load() {
					r.SetURL(&url.URL{Scheme: "http", Host: p.backends[i]})
					r.Out.Host = r.In.Host // arca's URLs name the proxy
					p.mu.Lock()
					p.served[p.backends[i]]++
					p.mu.Unlock()
					return
				}
			}
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if strings.Contains(err.Error(), "connection refused") {
				for i, b := range p.backends {
					if b == r.URL.Host {
						p.dead[i].Store(true)
					}
				}
			}
			w.WriteHeader(http.StatusBadGateway)
		},
		FlushInterval: -1,
	}
	p.srv = httptest.NewServer(rp)
	t.Cleanup(p.srv.Close)
	return p
}

// Addr is the proxy's host:port.
func (p *rrProxy) Addr() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// spread reports how many requests each replica got.
func (p *rrProxy) spread() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.served {
		out[k] = v
	}
	return out
}

// TestClusterPullThroughCrane is TestPullThroughCrane's pull on three
// replicas behind a round-robin balancer: crane pulls an image and an
// index through rules created on one replica, each request landing on the
// next replica; every blob goes upstream once, and a second pull is served
// from the cache by all.
func TestClusterPullThroughCrane(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	imgs := seedPullThrough(t, up, 1500)
	c := startCluster(t, 3, false, "--insecure-upstream", up.Host)
	c.nodes[0].cacheRule(t, "library-wild", up.Host+"/library/*", "lib/*")
	c.nodes[1].cacheRule(t, "special-static", up.Host+"/other/special", "lib/special")
	c.waitRule(t, "lib/app", "library-wild")
	c.waitRule(t, "lib/special", "special-static")
	p := newRRProxy(t, c)
	cr := crane(t)
	pull := func(dir string) {
		cr.crane("pull", "--insecure", "--format", "oci", p.Addr()+"/lib/app:v1", filepath.Join(dir, "app"))
		checkLayoutHas(t, filepath.Join(dir, "app"), imgs.app)
		cr.crane("pull", "--insecure", "--format", "oci", p.Addr()+"/lib/multi:latest", filepath.Join(dir, "multi"))
		checkLayoutHas(t, filepath.Join(dir, "multi"), imgs.amd)
		checkLayoutHas(t, filepath.Join(dir, "multi"), imgs.arm)
	}
	pull(t.TempDir())
	if got := cr.crane("digest", "--insecure", p.Addr()+"/lib/special:v1"); got != imgs.special.Digest() {
		t.Errorf("lib/special:v1 = %s, want %s (static rule created on replica 1)", got, imgs.special.Digest())
	}
	for _, b := range append(imgs.app.blobs(), imgs.amd.blobs()...) {
		if n := upstreamGETs(up, "/blobs/"+sha(b)); n != 1 {
			t.Errorf("upstream GETs of blob %s = %d, want 1", sha(b), n)
		}
	}
	before := upstreamContentRequests(up)
	pull(t.TempDir())
	if n := upstreamContentRequests(up) - before; n != 0 {
		t.Errorf("second pull made %d manifest/blob requests upstream, want 0", n)
	}
	t.Logf("requests per replica: %v", p.spread())
}

// TestClusterCrashDuringPushes is TestCrashDuringUploads on three replicas
// behind a round-robin balancer (every request of a push to the next
// replica): one replica is SIGKILLed while crane pushes are in flight;
// every acknowledged push is intact on the survivors, interrupted ones show
// no partial content and complete when retried, and the killed replica,
// restarted, serves them all.
func TestClusterCrashDuringPushes(t *testing.T) {
	c := startCluster(t, 3, false)
	p := newRRProxy(t, c)
	cr := crane(t)
	jobs := crashJobs(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	done := runPushes(ctx, cr, p.Addr(), jobs)
	// Kill once the first push was acknowledged (the big ones are still
	// uploading then).
	for j := range done {
		if j.err == nil {
			break
		}
	}
	c.nodes[1].Kill9()
	cancel()
	for range done {
	}
	survivors := []*arca{c.nodes[0], c.nodes[2]}
	acked := 0
	for _, j := range jobs {
		for _, a := range survivors {
			if j.err == nil {
				checkImage(t, a, j.repo, j.tag, j.im)
			} else {
				checkNoPartialImage(t, a, j)
			}
		}
		if j.err == nil {
			acked++
		}
	}
	t.Logf("%d/%d pushes acknowledged before the kill; requests per replica: %v", acked, len(jobs), p.spread())
	if acked == len(jobs) {
		t.Error("every push finished before the kill: nothing was interrupted; use larger images")
	}
	// Retry the interrupted pushes through the balancer (the dead replica
	// is out), then restart the dead replica: it serves everything.
	for _, j := range jobs {
		if j.err != nil {
			cr.crane("push", "--insecure", j.layout, p.Addr()+"/"+j.repo+":"+j.tag)
		}
	}
	n1 := c.start(t, 1)
	for _, j := range jobs {
		for _, a := range append(survivors, n1) {
			checkImage(t, a, j.repo, j.tag, j.im)
		}
	}
}
