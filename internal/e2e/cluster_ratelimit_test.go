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
	holdsEveryReplica(t, upstreamreg.Fault{Count: 1, Status: http.StatusTooManyRequests, RetryAfter: "10"}, 10*time.Second)
}

// TestClusterTooManyRequestsRateLimitReset: the same with a 429 that has
// no Retry-After but Docker Hub's rate-limit headers, RateLimit-Reset
// among them: the cluster holds back until that reset (4s), not for the
// default 10s.
func TestClusterTooManyRequestsRateLimitReset(t *testing.T) {
	holdsEveryReplica(t, upstreamreg.Fault{Count: 1, Status: http.StatusTooManyRequests, Header: http.Header{
		"Ratelimit-Limit": {"100;w=21600"}, "Ratelimit-Remaining": {"0;w=21600"}, "Ratelimit-Reset": {"4;w=21600"},
	}}, 4*time.Second)
}

// holdsEveryReplica has the upstream answer one pull on replica 0 with
// fault (a 429) and checks that the two other replicas send nothing
// upstream from the bound in which they learn of it until a second before
// hold ends, and pull again within 3s after it (the first successful pull
// is logged with its time since the 429).
func holdsEveryReplica(t *testing.T, fault upstreamreg.Fault, hold time.Duration) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1350, "amd64", 50<<10)
	seedImage(t, up, "library/app", "v1", im)
	c := startCluster(t, 3, false, "--insecure-upstream", proxy.Host())
	c.nodes[0].cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	manifest := func(a *arca) rawResp {
		return do(t, "GET", a.URL()+"/v2/lib/app/manifests/v1", map[string]string{"Accept": mtAcceptAll}, nil)
	}
	proxy.Inject(fault)
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
	for time.Since(got429) < hold-time.Second {
		for _, a := range c.nodes[1:] {
			if r := manifest(a); r.Status == http.StatusOK {
				t.Fatalf("replica %s pulled %s after the 429, while the upstream holds the cluster back", a.Addr, time.Since(got429))
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

	time.Sleep(time.Until(got429.Add(hold - 500*time.Millisecond)))
	for manifest(c.nodes[1]).Status != http.StatusOK {
		if time.Since(got429) > hold+3*time.Second {
			t.Fatalf("replica 1 still held back %s after the 429, want %s", time.Since(got429), hold)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("replica 1 pulled again %s after the 429 (hold %s)", time.Since(got429).Round(10*time.Millisecond), hold)
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
	manifestPulledOnThreeReplicas(t, 1500*time.Millisecond, "v1")
}

// TestClusterManifestSlowerThanLease: the same with an upstream whose
// manifest answer takes several fetch lease TTLs: the holder renews its
// lease while it waits, so the other replicas keep waiting for it instead
// of taking the lapsed lease and asking the upstream again.
func TestClusterManifestSlowerThanLease(t *testing.T) {
	manifestPulledOnThreeReplicas(t, 3*time.Second, "v1", "--fetch-lease-ttl", "600ms")
}

// TestClusterManifestNotFoundOneUpstreamGET: a tag the upstream does not
// have, pulled on three replicas at once, is one upstream GET too: the
// holder's 404 is shared with the replicas that waited for it (every
// client gets the 404).
func TestClusterManifestNotFoundOneUpstreamGET(t *testing.T) {
	manifestPulledOnThreeReplicas(t, 1500*time.Millisecond, "nope")
}

// manifestPulledOnThreeReplicas pulls tag, cold, with twelve clients over
// three replicas, the upstream's manifest answers delayed by delay, and
// checks it cost one upstream manifest GET. Every client gets the image's
// manifest (tag v1) or a 404 (any other tag: not upstream).
func manifestPulledOnThreeReplicas(t *testing.T, delay time.Duration, tag string, args ...string) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1370, "amd64", 20<<10)
	seedImage(t, up, "library/app", "v1", im)
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/manifests/", Count: -1, Delay: delay})
	c := startCluster(t, 3, false, append([]string{"--insecure-upstream", proxy.Host()}, args...)...)
	c.nodes[0].cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	want, wantBody := http.StatusOK, im.Manifest
	if tag != "v1" {
		want, wantBody = http.StatusNotFound, nil
	}
	errs := make(chan error, 12)
	for i := range 12 {
		go func() {
			req, _ := http.NewRequest(http.MethodGet, c.nodes[i%3].URL()+"/v2/lib/app/manifests/"+tag, nil)
			req.Header.Set("Accept", mtAcceptAll)
			resp, err := httpc.Do(req)
			if err != nil {
				errs <- err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != want || (wantBody != nil && !bytes.Equal(b, wantBody)) {
				errs <- fmt.Errorf("client %d on replica %d: %s %v, %d bytes, want %d", i, i%3, resp.Status, err, len(b), want)
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
	if n := proxy.Requests(http.MethodGet, "/manifests/"+tag); n != 1 {
		t.Errorf("%d upstream manifest GETs for a tag pulled on three replicas at once (upstream answering after %s), want 1: %v", n, delay, proxy.Log())
	}
}
