package upstream_test

import (
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
	"github.com/arcacache/arca/internal/upstream"
)

// faultSetup seeds an image behind a fault proxy.
func faultSetup(t *testing.T, o upstream.Options) (*upstreamreg.Registry, *upstreamreg.FaultProxy, *upstream.Client, upstream.Repo, []byte) {
	reg := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd})
	layer := randomBytes(t, 512<<10)
	reg.Push(t, "app", "v1", layer)
	proxy := upstreamreg.NewFaultProxy(t, reg)
	c, _ := newClient(t, o, proxy.Host())
	return reg, proxy, c, credsFor(reg, proxy.Host(), "app", nil), layer
}

func TestRetryAfterIsHonoured(t *testing.T) {
	_, proxy, c, repo, _ := faultSetup(t, upstream.Options{})
	ctx := t.Context()

	proxy.TooManyRequests(2, "1")
	start := time.Now()
	if _, err := c.GetManifest(ctx, repo, "v1"); err != nil {
		t.Fatalf("after two 429s: %v", err)
	}
	// At least the 2s asked for; the upper bound only catches a far longer
	// wait (a loaded machine adds to the 2s, never takes from it).
	el := time.Since(start)
	t.Logf("two 429s with Retry-After: 1: %s", el)
	if el < 2*time.Second || el > 20*time.Second {
		t.Errorf("took %s, want about 2s (Retry-After: 1, twice)", el)
	}
	if n := proxy.Requests("GET", "/manifests/v1"); n < 3 {
		t.Errorf("proxy saw %d manifest GETs, want at least 3 (two 429s, then success)", n)
	}

	date := time.Now().Add(1500 * time.Millisecond).UTC().Format(http.TimeFormat)
	proxy.TooManyRequests(1, date)
	start = time.Now()
	if _, err := c.HeadManifest(ctx, repo, "v1"); err != nil {
		t.Fatalf("after a 429 with an HTTP-date Retry-After: %v", err)
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Errorf("HTTP-date Retry-After waited only %s", el)
	}

	// Longer than MaxRetryAfter (60s): not waited for, the caller gets the 429.
	proxy.TooManyRequests(1, "3600")
	before := proxy.Requests("GET", "/manifests/v1")
	start = time.Now()
	_, err := c.GetManifest(ctx, repo, "v1")
	e := asError(t, err)
	if e.StatusCode != 429 || e.RetryAfter != time.Hour || e.Code != "TOOMANYREQUESTS" || !upstream.IsUnavailable(err) {
		t.Errorf("Retry-After 3600: %v (RetryAfter %s), want a 429 TOOMANYREQUESTS with RetryAfter 1h", err, e.RetryAfter)
	}
	// One request, and no wait: a wait of even MaxRetryAfter (60s) fails.
	if el := time.Since(start); el > 20*time.Second || proxy.Requests("GET", "/manifests/v1") != before+1 {
		t.Errorf("Retry-After 3600 was retried or waited for: %d GETs, %s", proxy.Requests("GET", "/manifests/v1")-before, el)
	}
}

func TestServerErrorsRetriedThenReported(t *testing.T) {
	_, proxy, c, repo, layer := faultSetup(t, upstream.Options{MaxRetries: 2})
	proxy.Unavailable(2)
	readBlob(t, c, repo, layer)

	proxy.Unavailable(10)
	before := proxy.Requests("", "")
	_, err := c.HeadManifest(t.Context(), repo, "v1")
	if e := asError(t, err); e.StatusCode != 503 || !upstream.IsUnavailable(err) {
		t.Fatalf("persistent 503: %v", err)
	}
	if n := proxy.Requests("", "") - before; n != 3 {
		t.Errorf("persistent 503: %d attempts, want 3 (MaxRetries 2)", n)
	}
}

func TestCutBlobIsAnErrorNotAShortBody(t *testing.T) {
	_, proxy, c, repo, layer := faultSetup(t, upstream.Options{})
	readBlob(t, c, repo, layer) // warm the token/basic cache
	proxy.CutBlobsAfter(100<<10, 1)
	before := proxy.Requests("GET", "/blobs/")
	rc, size, err := c.GetBlob(t.Context(), repo, digest.FromBytes(layer))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 100<<10 || size != int64(len(layer)) {
		t.Fatalf("cut stream: %d bytes of %d, err %v; want unexpected EOF after 100 KiB", len(got), size, err)
	}
	if n := proxy.Requests("GET", "/blobs/") - before; n != 1 {
		t.Errorf("a stream cut after it reached the caller was retried: %d GETs", n)
	}
	readBlob(t, c, repo, layer)
}

func TestCorruptManifestRejected(t *testing.T) {
	reg, proxy, c, repo, _ := faultSetup(t, upstream.Options{})
	d, err := c.HeadManifest(t.Context(), repo, "v1")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"v1", d.Digest.String()} {
		proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/manifests/", Count: 1, Corrupt: true})
		if _, err := c.GetManifest(t.Context(), repo, ref); !errors.Is(err, upstream.ErrDigestMismatch) {
			t.Errorf("corrupt manifest by %s: %v, want ErrDigestMismatch", ref, err)
		}
	}
	// The blob body is the caller's to verify; the client passes it through.
	layer := randomBytes(t, 1000)
	reg.Push(t, "app", "v2", layer)
	proxy.CorruptBlobs(1)
	rc, _, err := c.GetBlob(t.Context(), repo, digest.FromBytes(layer))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if len(got) != len(layer) || digest.FromBytes(got) == digest.FromBytes(layer) {
		t.Fatal("corrupt blob fault did not corrupt")
	}
}

func TestUpstreamDownThenUp(t *testing.T) {
	_, proxy, c, repo, _ := faultSetup(t, upstream.Options{})
	if _, err := c.HeadManifest(t.Context(), repo, "v1"); err != nil {
		t.Fatal(err)
	}
	proxy.Down()
	_, err := c.HeadManifest(t.Context(), repo, "v1")
	if e := asError(t, err); e.StatusCode != 0 || !upstream.IsUnavailable(err) || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("down: %v, want connection refused, unavailable", err)
	}
	// Marked unhealthy: the next request fails at once, without traffic
	// (a HostDownError is only returned without a request; the time
	// bound is a loose guard, a loaded machine can take a while for
	// anything).
	start := time.Now()
	_, err = c.HeadManifest(t.Context(), repo, "v1")
	var down *upstream.HostDownError
	if !errors.As(err, &down) || !upstream.IsUnavailable(err) || time.Since(start) > 5*time.Second {
		t.Fatalf("while down: %v after %s, want a fast HostDownError", err, time.Since(start))
	}
	if st := c.HostHealth(proxy.Host()); st.Healthy || !strings.Contains(st.Reason, "refused") {
		t.Errorf("HostHealth while down = %+v", st)
	}
	// Up again: a probe (every second) ends the 10s window early.
	proxy.Up(t)
	waitHealthy(t, c, proxy.Host(), 8*time.Second)
	if _, err := c.HeadManifest(t.Context(), repo, "v1"); err != nil {
		t.Fatalf("up again: %v", err)
	}
}

// waitHealthy waits until host's health probe has ended its window.
func waitHealthy(t *testing.T, c *upstream.Client, host string, within time.Duration) {
	t.Helper()
	start := time.Now()
	for !c.HostHealth(host).Healthy {
		if time.Since(start) > within {
			t.Fatalf("%s still unhealthy after %s: %+v", host, within, c.HostHealth(host))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%s healthy again after %s", host, time.Since(start))
}

// A 429 whose Retry-After is too long to wait for holds every later
// request to the host back (reported as a 429, no traffic) until then.
func TestTooManyRequestsHoldsHostBack(t *testing.T) {
	_, proxy, c, repo, _ := faultSetup(t, upstream.Options{})
	proxy.TooManyRequests(1, "3600")
	if _, err := c.GetManifest(t.Context(), repo, "v1"); asError(t, err).StatusCode != 429 {
		t.Fatalf("first: %v", err)
	}
	before := proxy.Requests("", "")
	_, err := c.HeadManifest(t.Context(), repo, "v1")
	if e := asError(t, err); e.StatusCode != 429 || e.RetryAfter < 59*time.Minute || !upstream.IsUnavailable(err) {
		t.Errorf("held back: %v (RetryAfter %s), want a 429 with about 1h to wait", err, e.RetryAfter)
	}
	if n := proxy.Requests("", "") - before; n != 0 {
		t.Errorf("held back: %d requests reached the upstream, want 0", n)
	}
	if st := c.HostHealth(proxy.Host()); st.Healthy || !st.RateLimited {
		t.Errorf("HostHealth = %+v, want rate limited", st)
	}
}

// A 429 without Retry-After holds the host back until the reset its
// rate-limit headers announce (capped at an hour), and for the default
// window when it has none; Retry-After, when sent, decides. The hold and
// the wait reported to the caller are the same.
func TestTooManyRequestsHoldsUntilRateLimitReset(t *testing.T) {
	_, proxy, _, repo, _ := faultSetup(t, upstream.Options{})
	for _, tc := range []struct {
		name   string
		header http.Header
		want   time.Duration
	}{
		{"no header: the default window", nil, 10 * time.Second},
		{"RateLimit-Reset", http.Header{"Ratelimit-Reset": {"120;w=21600"}}, 2 * time.Minute},
		{"RateLimit-Reset beyond an hour", http.Header{"Ratelimit-Reset": {"86400"}}, time.Hour},
		{"X-RateLimit-Reset", http.Header{"X-Ratelimit-Reset": {strconv.FormatInt(time.Now().Add(5*time.Minute).Unix(), 10)}}, 5 * time.Minute},
		{"Retry-After first", http.Header{"Retry-After": {"30"}, "Ratelimit-Reset": {"120"}}, 30 * time.Second},
		{"Retry-After beyond an hour", http.Header{"Retry-After": {"86400"}}, time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh client: its own view of the host. Nothing is sat out.
			c, _ := newClient(t, upstream.Options{MaxRetryAfter: time.Second}, proxy.Host())
			proxy.Reset()
			proxy.Inject(upstreamreg.Fault{Count: 1, Status: http.StatusTooManyRequests, Header: tc.header})
			start := time.Now()
			_, err := c.GetManifest(t.Context(), repo, "v1")
			if e := asError(t, err); e.StatusCode != http.StatusTooManyRequests || e.RetryAfter < tc.want-2*time.Second || e.RetryAfter > tc.want {
				t.Errorf("GetManifest: %v (RetryAfter %s), want a 429 with about %s to wait", err, e.RetryAfter, tc.want)
			}
			st := c.HostHealth(proxy.Host())
			if hold := st.Until.Sub(start); !st.RateLimited || hold < tc.want-2*time.Second || hold > tc.want+5*time.Second {
				t.Errorf("held back for %s (%+v), want %s", hold, st, tc.want)
			} else {
				t.Logf("held back for %s", hold.Round(time.Millisecond))
			}
		})
	}
}

// A host that times out is marked unhealthy after one attempt: the
// request does not pay the timeout once per retry, the next not at all.
func TestTimeoutMarksHostAtOnce(t *testing.T) {
	_, proxy, c, repo, _ := faultSetup(t, upstream.Options{HeaderTimeout: 300 * time.Millisecond})
	proxy.Inject(upstreamreg.Fault{Count: -1, Delay: time.Hour})
	// The attempts are counted at the proxy (the times only catch a hang:
	// a loaded machine stretches them).
	start := time.Now()
	_, err := c.HeadManifest(t.Context(), repo, "v1")
	el := time.Since(start)
	if n := proxy.Requests(http.MethodHead, "/manifests/v1"); !upstream.IsUnavailable(err) || n != 1 || el > 10*time.Second {
		t.Fatalf("blackhole: %v after %s and %d attempts, want a timeout after about 300ms (one attempt)", err, el, n)
	}
	t.Logf("blackhole: timed out after %s", el)
	start = time.Now()
	_, err = c.HeadManifest(t.Context(), repo, "v1")
	var down *upstream.HostDownError
	if n := proxy.Requests(http.MethodHead, "/manifests/v1"); !errors.As(err, &down) || n != 1 || time.Since(start) > 5*time.Second {
		t.Fatalf("second request: %v after %s (%d attempts in all), want a fast HostDownError without a request", err, time.Since(start), n)
	}
}

func TestTimeouts(t *testing.T) {
	// One client per timeout: with a 300ms header timeout on the blob
	// requests meant to succeed too, a loaded machine's upstream answering
	// slower than that failed them.
	off := upstream.HealthOptions{Off: true}
	_, proxy, slowHeaders, repo, layer := faultSetup(t, upstream.Options{HeaderTimeout: 300 * time.Millisecond, MaxRetries: -1, Health: off})
	c, _ := newClient(t, upstream.Options{IdleTimeout: 300 * time.Millisecond, MaxRetries: -1, Health: off}, proxy.Host())
	readBlob(t, c, repo, layer)

	// The faults last a minute: far past the loose bounds below (which a
	// loaded machine may stretch the 300ms towards), so they still tell a
	// timeout from none.
	proxy.Inject(upstreamreg.Fault{PathContains: "/manifests/", Count: 1, Delay: time.Minute})
	start := time.Now()
	_, err := slowHeaders.HeadManifest(t.Context(), repo, "v1")
	if !upstream.IsUnavailable(err) || !strings.Contains(err.Error(), "no response headers within 300ms") {
		t.Errorf("slow headers: %v", err)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("slow headers: gave up after %s, want ~300ms", el)
	} else {
		t.Logf("slow headers: gave up after %s", el)
	}

	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: 1, Stall: time.Minute, CutAfter: 64 << 10})
	rc, _, err := c.GetBlob(t.Context(), repo, digest.FromBytes(layer))
	if err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	_, err = io.ReadAll(rc)
	rc.Close()
	if err == nil || !strings.Contains(err.Error(), "sent no data for 300ms") {
		t.Errorf("stalled body: %v", err)
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("stalled body: gave up after %s, want ~300ms", el)
	} else {
		t.Logf("stalled body: gave up after %s", el)
	}

	// A slow consumer is not a stalled upstream: pauses between Reads do not count.
	rc, _, err = c.GetBlob(t.Context(), repo, digest.FromBytes(layer))
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 200<<10)
	for {
		_, err := rc.Read(buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("slow consumer: %v", err)
		}
		time.Sleep(400 * time.Millisecond)
	}
}

func TestRateLimitHeadersRecorded(t *testing.T) {
	var mu sync.Mutex
	var seen []upstream.RateLimit
	hook := func(credKey, host string, rl upstream.RateLimit) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, rl)
	}
	reg := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd})
	layer := randomBytes(t, 4096)
	reg.Push(t, "app", "v1", layer)
	proxy := upstreamreg.NewFaultProxy(t, reg)
	c, metrics := newClient(t, upstream.Options{OnRateLimit: hook}, proxy.Host())
	repo := credsFor(reg, proxy.Host(), "app", nil)

	proxy.SetHeader("RateLimit-Limit", "100;w=21600")
	proxy.SetHeader("RateLimit-Remaining", "76;w=21600")
	if _, err := c.HeadManifest(t.Context(), repo, "v1"); err != nil {
		t.Fatal(err)
	}
	rl, ok := c.RateLimit("cs", proxy.Host())
	if !ok || rl.Limit != 100 || rl.Remaining != 76 || rl.Window != 6*time.Hour || time.Since(rl.ObservedAt) > time.Minute {
		t.Fatalf("RateLimit(cs) = %+v, %v", rl, ok)
	}
	if _, ok := c.RateLimit("", proxy.Host()); ok {
		t.Error("anonymous has a rate limit although only cs pulled")
	}
	proxy.SetHeader("RateLimit-Remaining", "75;w=21600")
	readBlob(t, c, repo, layer)
	if rl, _ := c.RateLimit("cs", proxy.Host()); rl.Remaining != 75 {
		t.Errorf("after a GET: remaining %d, want 75", rl.Remaining)
	}
	mu.Lock()
	hooked := len(seen)
	mu.Unlock()
	if hooked < 2 {
		t.Errorf("OnRateLimit called %d times, want at least 2", hooked)
	}
	src := upstream.Source("cs", proxy.Host())
	if v := metricValue(t, metrics, "arca_upstream_ratelimit_remaining", map[string]string{"source": src}); v != 75 {
		t.Errorf("arca_upstream_ratelimit_remaining{source=%q} = %v, want 75", src, v)
	}
	if v := metricValue(t, metrics, "arca_upstream_ratelimit_limit", map[string]string{"source": src}); v != 100 {
		t.Errorf("arca_upstream_ratelimit_limit = %v, want 100", v)
	}
	up := map[string]string{"upstream": proxy.Host()}
	if v := metricValue(t, metrics, "arca_upstream_requests_total", map[string]string{"upstream": proxy.Host(), "method": "GET", "status": "200"}); v < 1 {
		t.Errorf("arca_upstream_requests_total{GET,200} = %v", v)
	}
	if v := metricValue(t, metrics, "arca_upstream_requests_total", map[string]string{"upstream": proxy.Host(), "status": "401"}); v < 1 {
		t.Errorf("arca_upstream_requests_total{401} = %v, want the basic-auth challenge counted", v)
	}
	if v := metricValue(t, metrics, "arca_upstream_bytes_total", up); v < float64(len(layer)) {
		t.Errorf("arca_upstream_bytes_total = %v, want at least %d", v, len(layer))
	}
}

// With a shared store (the replicas' metadata store), a 429 one client got
// holds another client back too: it sends nothing to the host until the
// hold ends, then its requests go out again.
func TestTooManyRequestsHoldsOtherReplicasBack(t *testing.T) {
	store, err := metadata.OpenSQLite(t.Context(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	shared := upstream.HealthOptions{Shared: store, SharedEvery: 100 * time.Millisecond}
	// Retry-Afters longer than a second are not waited for (a pull's).
	o := upstream.Options{Health: shared, MaxRetryAfter: time.Second}
	_, proxy, a, repo, _ := faultSetup(t, o)
	b, _ := newClient(t, o, proxy.Host())

	proxy.TooManyRequests(1, "3")
	if _, err := a.GetManifest(t.Context(), repo, "v1"); asError(t, err).StatusCode != 429 {
		t.Fatalf("first: %v", err)
	}
	var until time.Time
	deadline := time.Now().Add(5 * time.Second)
	for {
		holds, err := store.UpstreamHolds(t.Context(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if until = holds["http://"+proxy.Host()]; !until.IsZero() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the 429's hold was not recorded in the shared store")
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := proxy.Requests("", "")
	_, err = b.GetManifest(t.Context(), repo, "v1")
	if e := asError(t, err); e.StatusCode != 429 || e.RetryAfter <= 0 || e.RetryAfter > 3*time.Second {
		t.Errorf("the other client: %v (RetryAfter %s), want a 429 held back by the first's", err, e.RetryAfter)
	}
	if n := proxy.Requests("", "") - before; n != 0 {
		t.Errorf("the other client sent %d requests to the held-back host, want 0", n)
	}
	if st := b.HostHealth(proxy.Host()); st.Healthy || !st.RateLimited {
		t.Errorf("the other client's HostHealth = %+v, want rate limited", st)
	}
	time.Sleep(time.Until(until) + 50*time.Millisecond)
	if _, err := b.GetManifest(t.Context(), repo, "v1"); err != nil {
		t.Errorf("after the hold ended: %v", err)
	}
}
