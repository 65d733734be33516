package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// TestClusterTooManyRequestsHoldsEveryReplica: the upstream answers one
// request of one replica 429 with a Retry-After too long for a pull to sit
// out. Every replica then leaves the upstream alone until the hold ends
// (the fault proxy counts what reaches it), after the documented bound in
// which a replica learns of another's 429; afterwards pulls go upstream
// again on every replica.
func TestClusterTooManyRequestsHoldsEveryReplica(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1350, "amd64", 50<<10)
	seedImage(t, up, "library/app", "v1", im)
	c := startCluster(t, 3, false, "--insecure-upstream", proxy.Host())
	c.nodes[0].cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	const retryAfter = 10 * time.Second
	manifest := func(a *arca) rawResp {
		return do(t, "GET", a.URL()+"/v2/lib/app/manifests/v1", map[string]string{"Accept": mtAcceptAll}, nil)
	}
	proxy.TooManyRequests(1, "10")
	r := manifest(c.nodes[0])
	got429 := time.Now()
	if r.Status == http.StatusOK {
		t.Fatalf("replica 0 pulled through the 429: %s", r)
	}
	t.Logf("replica 0, answered 429 upstream: %d %s", r.Status, r.Body)

	// The bound (1s) in which the others learn of it, with a margin.
	time.Sleep(1500 * time.Millisecond)
	before := proxy.Requests("", "")
	tries := 0
	for time.Since(got429) < retryAfter-time.Second {
		for _, a := range c.nodes[1:] {
			if r := manifest(a); r.Status == http.StatusOK {
				t.Fatalf("replica %s pulled while the upstream holds the cluster back", a.Addr)
			}
			if r := do(t, "GET", a.URL()+"/v2/lib/app/blobs/"+sha(im.Layers[0]), nil, nil); r.Status == http.StatusOK {
				t.Fatalf("replica %s pulled a blob while the upstream holds the cluster back", a.Addr)
			}
			tries += 2
		}
		time.Sleep(250 * time.Millisecond)
	}
	if n := proxy.Requests("", "") - before; n != 0 {
		t.Errorf("%d requests reached the upstream from the other replicas during the hold (%d pulls), want 0: %v", n, tries, proxy.Log()[before:])
	}
	t.Logf("%d pulls on replicas 1 and 2 during the hold, %d upstream requests", tries, proxy.Requests("", "")-before)

	time.Sleep(time.Until(got429.Add(retryAfter + 500*time.Millisecond)))
	for _, a := range c.nodes[1:] {
		if err := pullImage(a, "lib/app", "v1", im); err != nil {
			t.Errorf("after the hold ended: %v", err)
		}
	}
	if proxy.Requests("", "") == before {
		t.Error("no request went upstream after the hold ended")
	}
}

// TestClusterManifestOneUpstreamGET: a cold tag pulled on three replicas
// at once (four clients each) is one upstream manifest GET, the pull
// Docker Hub counts: the replica whose fetch takes the manifest's fetch
// lease asks the upstream (which is slow here), the others wait until it
// stored the manifest. Every client gets the same manifest.
func TestClusterManifestOneUpstreamGET(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1370, "amd64", 20<<10)
	seedImage(t, up, "library/app", "v1", im)
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/manifests/", Count: -1, Delay: 1500 * time.Millisecond})
	c := startCluster(t, 3, false, "--insecure-upstream", proxy.Host())
	c.nodes[0].cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	errs := make(chan error, 12)
	for i := range 12 {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, c.nodes[i%3].URL()+"/v2/lib/app/manifests/v1", nil)
			req.Header.Set("Accept", mtAcceptAll)
			resp, err := httpc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(b, im.Manifest) {
				errs <- fmt.Errorf("client %d on replica %d: %s %v, %d bytes", i, i%3, resp.Status, err, len(b))
				return
			}
			errs <- nil
		}()
	}
	for range 12 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if n := upstreamGETs(up, "/manifests/v1"); n != 1 {
		t.Errorf("%d upstream manifest GETs for a tag pulled on three replicas at once, want 1", n)
	}
}
