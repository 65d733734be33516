package e2e

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Fault injection against the real binary: an upstream (Debian's
// docker-registry) behind the fault proxy, a cache rule naming the proxy
// (a loopback host, named explicitly: arca runs with its default egress
// policy), an image pulled before the fault and one never pulled. For each
// fault the test measures how long clients wait, checks what they get,
// that nothing wrong is stored, and that the cached image keeps being
// served at once.

// faultEnv is one upstream, fault proxy and arca.
type faultEnv struct {
	up     *upstreamreg.Registry
	proxy  *upstreamreg.FaultProxy
	a      *arca
	cached *testImage // pulled before the fault
	cold   *testImage // upstream only
}

// Timeouts the fault suite runs arca with (the defaults are 5s/15s/30s
// and a 2s revalidation timeout; shorter here to keep the suite quick).
var faultArgs = []string{
	"--revalidate-after", "1s", "--upstream-connect-timeout", "1s",
	"--upstream-header-timeout", "2s", "--upstream-idle-timeout", "2s",
}

func startFaultEnv(t *testing.T, tls bool, extra ...string) *faultEnv {
	t.Helper()
	up := upstreamreg.Start(t, upstreamreg.Options{})
	fe := &faultEnv{up: up, cached: newImage(t, 900, "amd64", 256<<10, 3000), cold: newImage(t, 901, "amd64", 512<<10)}
	seedImage(t, up, "library/app", "v1", fe.cached)
	seedImage(t, up, "library/cold", "v1", fe.cold)
	args := append(slices.Clone(faultArgs), extra...)
	env := []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}
	if tls {
		fe.proxy = upstreamreg.NewTLSFaultProxy(t, up)
		env = append(env, "SSL_CERT_FILE="+fe.proxy.CAFile())
	} else {
		fe.proxy = upstreamreg.NewFaultProxy(t, up)
		args = append(args, "--insecure-upstream", fe.proxy.Host())
	}
	fe.a = &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Args: args, Env: env,
		DefaultEgress: !slices.Contains(extra, "--upstream-allow")})}
	fe.a.cacheRule(t, "faulty", fe.proxy.Host()+"/library/*", "lib/*")
	getCached(t, fe.a.URL()+"/v2/lib/app/manifests/v1", fe.cached.Digest())
	for _, b := range fe.cached.blobs() {
		getCached(t, fe.a.URL()+"/v2/lib/app/blobs/"+sha(b), sha(b))
	}
	return fe
}

// timedGet GETs u and reads the whole body; err is a failed transfer.
func timedGet(u string) (r rawResp, took time.Duration, err error) {
	start := time.Now()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return r, 0, err
	}
	req.Header.Set("Accept", mtAcceptAll)
	c := &http.Client{Timeout: 2 * time.Minute}
	resp, err := c.Do(req)
	if err != nil {
		return r, time.Since(start), err
	}
	defer resp.Body.Close()
	r.Status, r.Header = resp.StatusCode, resp.Header
	r.Body, err = io.ReadAll(resp.Body)
	return r, time.Since(start), err
}

// internalService is a loopback HTTP service no rule names (what an SSRF
// would be after); it counts the requests it gets.
func internalService(t *testing.T) (addr string, hits *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hits = &atomic.Int64{}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		http.Error(w, "INTERNAL-SECRET-BODY of a service arca must not reach", http.StatusInternalServerError)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), hits
}

func TestFaultInjection(t *testing.T) {
	type faultCase struct {
		name      string
		coldFirst bool // the cold blob before the cached tag (so it meets the fault first)
		tls       bool
		extra     []string
		inject    func(t *testing.T, fe *faultEnv) (check func(t *testing.T))
		// tagCache lists the X-Arca-Cache values a pull of the cached tag
		// (due for revalidation) may answer with.
		tagCache []string
		// coldStatus is the status of a never-pulled blob; 0: the answer
		// starts (200) and the transfer fails.
		coldStatus int
		coldSays   string        // in the 424's message
		coldWithin time.Duration // generous bound on the client's wait
		// hostDown: the fault marks the upstream down (or holds it back), so
		// a second cold request sends it nothing.
		hostDown bool
	}
	internalHits := func(t *testing.T, hits *atomic.Int64) func(t *testing.T) {
		return func(t *testing.T) {
			if n := hits.Load(); n != 0 {
				t.Errorf("the internal service got %d requests, want 0", n)
			}
		}
	}
	cases := []faultCase{
		{name: "blackhole", inject: func(_ *testing.T, fe *faultEnv) func(*testing.T) {
			fe.proxy.Blackhole()
			return nil
		}, tagCache: []string{"stale"}, coldStatus: http.StatusFailedDependency, coldSays: "faulty", coldWithin: 10 * time.Second, hostDown: true},
		{name: "blackhole-cold-first", coldFirst: true, inject: func(_ *testing.T, fe *faultEnv) func(*testing.T) {
			fe.proxy.Blackhole()
			return nil
		}, tagCache: []string{"stale"}, coldStatus: http.StatusFailedDependency, coldSays: "did not answer in time", coldWithin: 10 * time.Second, hostDown: true},
		{name: "stall-after-headers", inject: func(_ *testing.T, fe *faultEnv) func(*testing.T) {
			fe.proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, Stall: time.Hour})
			return nil
		}, tagCache: []string{"hit", "stale"}, coldStatus: 0, coldWithin: 10 * time.Second},
		{name: "stall-mid-body", inject: func(_ *testing.T, fe *faultEnv) func(*testing.T) {
			fe.proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, Stall: time.Hour, CutAfter: 64 << 10})
			return nil
		}, tagCache: []string{"hit", "stale"}, coldStatus: 0, coldWithin: 10 * time.Second},
		{name: "refused", inject: func(t *testing.T, fe *faultEnv) func(*testing.T) {
			fe.proxy.Down()
			return func(t *testing.T) {
				// The rule's status and the metrics show the host's state.
				if out := fe.a.cli(t, "cache", "show", "-r", "default", "-n", "faulty"); !strings.Contains(out, `"Unhealthy"`) {
					t.Errorf("cache show: no Unhealthy upstreamHealth:\n%s", out)
				}
				if v := fe.a.metric(t, "arca_upstream_host_healthy", `host="http://`+fe.proxy.Host()+`"`); v != 0 {
					t.Errorf("arca_upstream_host_healthy = %v, want 0", v)
				}
			}
		}, tagCache: []string{"stale"}, coldStatus: http.StatusFailedDependency, coldSays: "refused the connection", coldWithin: 5 * time.Second, hostDown: true},
		{name: "5xx", inject: func(_ *testing.T, fe *faultEnv) func(*testing.T) {
			fe.proxy.Unavailable(-1)
			return nil
		}, tagCache: []string{"stale"}, coldStatus: http.StatusFailedDependency, coldSays: "503", coldWithin: 5 * time.Second, hostDown: true},
		{name: "429-retry-after", inject: func(_ *testing.T, fe *faultEnv) func(*testing.T) {
			fe.proxy.TooManyRequests(-1, "30")
			return func(t *testing.T) {
				// Held back: more pulls do not reach the upstream.
				before := fe.proxy.Requests("", "")
				for range 3 {
					timedGet(fe.a.URL() + "/v2/lib/cold/blobs/" + sha(fe.cold.Layers[0]))
				}
				if n := fe.proxy.Requests("", "") - before; n != 0 {
					t.Errorf("during Retry-After: %d more upstream requests, want 0", n)
				}
			}
		}, tagCache: []string{"stale"}, coldStatus: http.StatusFailedDependency, coldSays: "too many requests", coldWithin: 5 * time.Second, hostDown: true},
		{name: "redirect-to-loopback", inject: func(t *testing.T, fe *faultEnv) func(*testing.T) {
			addr, hits := internalService(t)
			fe.proxy.RedirectTo("http://" + addr + "/admin")
			return internalHits(t, hits)
		}, tagCache: []string{"hit"}, coldStatus: http.StatusFailedDependency, coldSays: "egress policy", coldWithin: 5 * time.Second},
		{name: "redirect-to-metadata", inject: func(_ *testing.T, fe *faultEnv) func(*testing.T) {
			fe.proxy.RedirectTo("http://169.254.169.254/latest/meta-data/iam/security-credentials/")
			return nil
		}, tagCache: []string{"hit"}, coldStatus: http.StatusFailedDependency, coldSays: "egress policy", coldWithin: 5 * time.Second},
		// With loopback allowed (so only the downgrade rule can refuse).
		{name: "redirect-https-to-http", tls: true, extra: arcaproc.LoopbackOnly, inject: func(t *testing.T, fe *faultEnv) func(*testing.T) {
			addr, hits := internalService(t)
			fe.proxy.RedirectTo("http://" + addr + "/storage")
			return internalHits(t, hits)
		}, tagCache: []string{"hit"}, coldStatus: http.StatusFailedDependency, coldSays: "https to plain http", coldWithin: 5 * time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fe := startFaultEnv(t, tc.tls, tc.extra...)
			a := fe.a
			check := tc.inject(t, fe)
			time.Sleep(1100 * time.Millisecond) // the cached tag is due for revalidation

			tag := func() {
				r, took, err := timedGet(a.URL() + "/v2/lib/app/manifests/v1")
				t.Logf("%s: cached tag: %d %s after %s", tc.name, r.Status, r.Header.Get("X-Arca-Cache"), took.Round(time.Millisecond))
				if err != nil || r.Status != http.StatusOK || sha(r.Body) != fe.cached.Digest() || !slices.Contains(tc.tagCache, r.Header.Get("X-Arca-Cache")) {
					t.Errorf("cached tag: %d %q %v, want the cached manifest (%v)", r.Status, r.Header.Get("X-Arca-Cache"), err, tc.tagCache)
				}
				// A hang guard (the time is logged): a loaded machine
				// stretches the 2s.
				if took > 20*time.Second {
					t.Errorf("cached tag took %s, want about the 2s revalidation timeout at most", took)
				}
			}
			if !tc.coldFirst {
				tag()
			}

			coldBlob := fe.cold.Layers[0]
			r, took, err := timedGet(a.URL() + "/v2/lib/cold/blobs/" + sha(coldBlob))
			t.Logf("%s: cold blob: %d after %s (transfer error: %v) %s", tc.name, r.Status, took.Round(time.Millisecond), err, oneLineBody(r.Body))
			switch {
			case tc.coldStatus == 0 && (err == nil && r.Status == http.StatusOK && sha(r.Body) == sha(coldBlob)):
				t.Errorf("cold blob: a complete body through a stalled upstream?")
			case tc.coldStatus == 0 && err == nil && r.Status == http.StatusOK:
				t.Errorf("cold blob: %d bytes of a cut transfer looked complete", len(r.Body))
			case tc.coldStatus != 0 && r.Status != tc.coldStatus:
				t.Errorf("cold blob: %d %s, want %d", r.Status, r.Body, tc.coldStatus)
			case tc.coldStatus != 0 && !strings.Contains(string(r.Body), tc.coldSays):
				t.Errorf("cold blob: message %s, want it to say %q", r.Body, tc.coldSays)
			}
			if took > tc.coldWithin {
				t.Errorf("cold blob took %s, want at most %s", took, tc.coldWithin)
			}
			for _, leak := range []string{"INTERNAL-SECRET", "injected fault", "rate limit. You may", "127.0.0.1:" + portOf(fe.proxy.StorageHost())} {
				if strings.Contains(string(r.Body), leak) {
					t.Errorf("cold blob: the answer reflects the upstream's words or an internal address (%q): %s", leak, r.Body)
				}
			}

			if tc.coldFirst {
				tag()
			}

			// A second cold request fails fast (the host is known bad, or the
			// redirect refused again at once): with the host down it sends
			// the upstream nothing. The time bound is a hang guard; the
			// upstream's timeouts are 2s, so what tells "at once" from
			// "waited" is the request count, not the clock.
			if tc.coldStatus != 0 {
				path := "/blobs/" + sha(fe.cold.Config)
				r, took, _ = timedGet(a.URL() + "/v2/lib/cold" + path)
				t.Logf("%s: second cold blob: %d after %s", tc.name, r.Status, took.Round(time.Millisecond))
				if r.Status != tc.coldStatus || took > 10*time.Second {
					t.Errorf("second cold blob: %d after %s, want %d at once", r.Status, took, tc.coldStatus)
				}
				if n := fe.proxy.Requests("", path); tc.hostDown && n != 0 {
					t.Errorf("second cold blob: %d upstream requests with the host down, want 0", n)
				}
			}

			// The cached image is served at once, without the upstream.
			before := fe.proxy.Requests("", "")
			for _, b := range fe.cached.blobs() {
				r, took, err := timedGet(a.URL() + "/v2/lib/app/blobs/" + sha(b))
				if err != nil || r.Status != http.StatusOK || sha(r.Body) != sha(b) || took > 10*time.Second {
					t.Errorf("cached blob during the outage: %d %v after %s", r.Status, err, took)
				}
			}
			r, took, _ = timedGet(a.URL() + "/v2/lib/app/manifests/" + fe.cached.Digest())
			if r.Status != http.StatusOK || took > 10*time.Second {
				t.Errorf("cached manifest by digest during the outage: %d after %s", r.Status, took)
			}
			// (The tag's revalidation may still go on in the background: only
			// requests for the digests served here count.)
			for _, l := range fe.proxy.Log()[before:] {
				for _, d := range append([]string{fe.cached.Digest()}, blobDigests(fe.cached)...) {
					if strings.Contains(l.URI, d) {
						t.Errorf("serving the cached image sent the upstream %s %s during the outage", l.Method, l.URI)
					}
				}
			}

			// Nothing wrong stored: no blob, and no staging left behind once
			// the fetch has given up.
			hex := strings.TrimPrefix(sha(coldBlob), "sha256:")
			if _, err := os.Stat(filepath.Join(a.DataDir, "blobs", "blobs", "sha256", hex[:2], hex)); err == nil {
				t.Errorf("the cold blob was stored")
			}
			waitEmptyDir(t, filepath.Join(a.DataDir, "blobs", "uploads"), 15*time.Second)
			if check != nil {
				check(t)
			}
			if os.Getenv("FAULT_LOGS") != "" {
				t.Log(a.Logs())
			}
		})
	}
}

// blobDigests lists the digests of im's blobs.
func blobDigests(im *testImage) []string {
	var ds []string
	for _, b := range im.blobs() {
		ds = append(ds, sha(b))
	}
	return ds
}

func portOf(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

func oneLineBody(b []byte) string {
	if len(b) > 300 {
		b = b[:300]
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// waitEmptyDir waits until dir (if it exists) has no entries.
func waitEmptyDir(t *testing.T, dir string, within time.Duration) {
	t.Helper()
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) == 0 {
			return
		}
		if time.Since(start) > within {
			t.Errorf("%s still holds %d entries after %s (staging left behind)", dir, len(entries), within)
			return
		}
	}
}
