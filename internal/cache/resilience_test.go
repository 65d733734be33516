package cache_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// A cached tag due for revalidation is served within the revalidation
// timeout (default 2s) when the upstream accepts connections and never
// answers; the next pulls do not wait either (the host is marked down once
// the header timeout passes).
func TestRevalidationDeadlineServesStale(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	first := up.Push(t, "img", "latest", randomBytes(1000))
	proxy := upstreamreg.NewFaultProxy(t, up)
	e := newEnv(t, proxy.Host(), time.Millisecond, nil)
	url := e.srv.URL + "/v2/cached/img/manifests/latest"
	if r := get(t, url); r.cache != "miss" {
		t.Fatalf("first: %d %q", r.status, r.cache)
	}
	proxy.Inject(upstreamreg.Fault{Count: -1, Delay: time.Hour}) // blackhole
	for i := range 3 {
		time.Sleep(5 * time.Millisecond)
		start := time.Now()
		r := get(t, url)
		took := time.Since(start)
		t.Logf("pull %d with a blackholed upstream: %d %q after %s", i, r.status, r.cache, took)
		if r.status != http.StatusOK || r.cache != "stale" || digest.FromBytes(r.body) != first {
			t.Fatalf("pull %d: %d %q, want the cached manifest, stale", i, r.status, r.cache)
		}
		// Without the deadline a pull would wait for the upstream's 15s
		// header timeout; a loaded machine stretches the 2s, not to that.
		if took > 12*time.Second {
			t.Errorf("pull %d took %s, want about the 2s revalidation timeout", i, took)
		}
	}
}

// Upstream 404s are remembered per source repository: a client retrying a
// digest the upstream lacks, or a tag it lacks, reaches the upstream once.
func TestNegativeCaching(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.Push(t, "img", "v1", randomBytes(100))
	proxy := upstreamreg.NewFaultProxy(t, up)
	e := newEnv(t, proxy.Host(), time.Hour, nil)
	missing := digest.FromBytes([]byte("not upstream"))
	for _, tc := range []struct{ name, path, upPath string }{
		{"blob GET", "/v2/cached/img/blobs/" + missing.String(), "/blobs/" + missing.String()},
		{"manifest by digest", "/v2/cached/img/manifests/" + missing.String(), "/manifests/" + missing.String()},
		{"tag", "/v2/cached/img/manifests/nope", "/manifests/nope"},
	} {
		for range 5 {
			if r := get(t, e.srv.URL+tc.path); r.status != http.StatusNotFound {
				t.Fatalf("%s: %d %s, want 404", tc.name, r.status, r.body)
			}
		}
		if n := proxy.Requests("", tc.upPath); n != 1 {
			t.Errorf("%s: 5 requests made %d upstream requests, want 1", tc.name, n)
		}
	}
	// Per source repository: another repository asks again.
	if r := get(t, e.srv.URL+"/v2/cached/other/blobs/"+missing.String()); r.status != http.StatusNotFound {
		t.Fatalf("other repository: %d", r.status)
	}
	if n := proxy.Requests("", "/other/blobs/"+missing.String()); n != 1 {
		t.Errorf("other repository: %d upstream requests, want 1", n)
	}
}

// The client's 424 says what failed in words of ours (the upstream's
// status and code, the rule); the upstream's error body is only logged.
func TestUpstreamErrorBodyNotReflected(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.Push(t, "img", "v1", randomBytes(100))
	proxy := upstreamreg.NewFaultProxy(t, up)
	e := newEnv(t, proxy.Host(), time.Hour, nil)
	proxy.Unavailable(-1)
	r := get(t, e.srv.URL+"/v2/cached/img/manifests/v1")
	body := string(r.body)
	if r.status != http.StatusFailedDependency || !strings.Contains(body, "503") || !strings.Contains(body, "UNAVAILABLE") || !strings.Contains(body, "test-rule") {
		t.Fatalf("upstream 503: %d %s, want a 424 naming the status, code and rule", r.status, body)
	}
	if strings.Contains(body, "injected fault") {
		t.Errorf("the upstream's error body reached the client: %s", body)
	}
}
