package e2e

import (
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Shutdown and detached upstream fetches, against the real binary: a
// client starts a cold blob pull through a rule and leaves; the fetch goes
// on detached; SIGTERM comes while it is still running.

// startDetachedFetch starts arca (with extra serve flags) behind a rule to
// an upstream whose next blob GET stalls for stall after 1 MiB, starts a
// cold pull of a 16 MiB blob, reads a little and leaves.
func startDetachedFetch(t *testing.T, stall time.Duration, extra ...string) (*upstreamreg.FaultProxy, *arca, []string, string) {
	t.Helper()
	up := upstreamreg.Start(t, upstreamreg.Options{})
	blob := randomBytes(300, 16<<20)
	up.PushBlob(t, "library/app", blob)
	proxy := upstreamreg.NewFaultProxy(t, up)
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", CutAfter: 1 << 20, Stall: stall, Count: 1})
	args := append([]string{"--insecure-upstream", proxy.Host()}, extra...)
	a := startCachingArca(t, nil, nil, args...)
	a.cacheRule(t, "library-wild", proxy.Host()+"/library/*", "lib/*")
	u := a.URL() + "/v2/lib/app/blobs/" + sha(blob)
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(io.Discard, resp.Body, 256<<10); err != nil {
		t.Fatalf("first bytes: %v", err)
	}
	resp.Body.Close()
	return proxy, a, args, sha(blob)
}

// restart starts arca again on the same address and data directory.
func restart(t *testing.T, a *arca, args []string) *arca {
	t.Helper()
	return &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Addr: a.Addr, DataDir: a.DataDir, Args: args,
		Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}})}
}

func sigtermAndWait(t *testing.T, a *arca, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	werr, exited := a.Wait(within)
	if !exited {
		t.Fatalf("arca still running %v after SIGTERM\n%s", within, a.Logs())
	}
	if werr != nil {
		t.Errorf("arca exit: %v\n%s", werr, a.Logs())
	}
	return time.Since(start)
}

func TestShutdownWaitsForDetachedFetch(t *testing.T) {
	proxy, a, args, d := startDetachedFetch(t, 2*time.Second, "--shutdown-timeout", "30s")
	took := sigtermAndWait(t, a, 30*time.Second)
	if !strings.Contains(a.Logs(), "upstream blob fetches finished") {
		t.Fatalf("no log line saying the fetch finished (exit after %v):\n%s", took, a.Logs())
	}
	t.Logf("exit %v after SIGTERM", took)
	b := restart(t, a, args)
	r := getCached(t, b.URL()+"/v2/lib/app/blobs/"+d, d)
	if got := r.Header.Get("X-Arca-Cache"); got != "hit" {
		t.Fatalf("after restart: %q, want hit (the detached fetch was stored)", got)
	}
	if n := proxy.Requests(http.MethodGet, "/blobs/"+d); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
}

func TestShutdownAbortsDetachedFetchAtTimeout(t *testing.T) {
	proxy, a, args, d := startDetachedFetch(t, time.Minute, "--shutdown-timeout", "2s")
	took := sigtermAndWait(t, a, 20*time.Second)
	if !strings.Contains(a.Logs(), "aborted upstream blob fetch") {
		t.Fatalf("no log line saying the fetch was aborted (exit after %v):\n%s", took, a.Logs())
	}
	if left, _ := os.ReadDir(filepath.Join(a.DataDir, "blobs", "uploads")); len(left) != 0 {
		t.Fatalf("aborted fetch left %d staged uploads", len(left))
	}
	b := restart(t, a, args)
	r := getCached(t, b.URL()+"/v2/lib/app/blobs/"+d, d)
	if got := r.Header.Get("X-Arca-Cache"); got != "miss" {
		t.Fatalf("after restart: %q, want miss (the aborted fetch stored nothing)", got)
	}
	if n := proxy.Requests(http.MethodGet, "/blobs/"+d); n != 2 {
		t.Fatalf("upstream blob GETs = %d, want 2", n)
	}
}

// Two rules on two real upstreams: rule A's upstream lacks a layer, rule
// B's has the image. While a cold request for the layer through A is under
// way (A's upstream answers slowly), crane pulls the image cold through B:
// it gets every byte, and A's request gets 404.
func TestCraneCrossRuleColdPull(t *testing.T) {
	upA := upstreamreg.Start(t, upstreamreg.Options{})
	upB := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 310, "amd64", 6<<20, 300<<10)
	seedImage(t, upB, "library/app", "v1", im)
	seedImage(t, upA, "library/app", "v1", newImage(t, 320, "amd64", 1<<20)) // other layers
	slowA := upstreamreg.NewFaultProxy(t, upA)
	slowA.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Delay: 3 * time.Second, Count: -1})
	a := startCachingArca(t, []string{slowA.Host(), upB.Host}, nil)
	a.cacheRule(t, "rule-a", slowA.Host()+"/library/*", "a/*")
	a.cacheRule(t, "rule-b", upB.Host+"/library/*", "b/*")

	layer := sha(im.blobs()[len(im.blobs())-1])
	viaA := make(chan rawResp, 1)
	go func() { viaA <- do(t, http.MethodGet, a.URL()+"/v2/a/app/blobs/"+layer, nil, nil) }()
	time.Sleep(300 * time.Millisecond) // A's fetch is under way
	out := filepath.Join(t.TempDir(), "pulled")
	crane(t).crane("pull", "--format", "oci", a.Ref("b/app:v1"), out)
	checkLayoutHas(t, out, im)
	if r := <-viaA; r.Status != http.StatusNotFound {
		t.Fatalf("layer through rule A (its upstream lacks it): %s, want 404", r)
	}
}

// --pprof-addr serves Go profiles on its own loopback listener only; the
// registry's address does not serve them, and a non-loopback address is
// refused at start.
func TestPprofListener(t *testing.T) {
	var pp string
	a := &arca{arcaproc.StartOnFreePort(t, func(addr string) arcaproc.Options {
		pp = addr
		return arcaproc.Options{Bin: arcaBin, Args: []string{"--pprof-addr", pp}}
	})}
	if r := do(t, http.MethodGet, "http://"+pp+"/debug/pprof/cmdline", nil, nil); r.Status != http.StatusOK || !strings.Contains(string(r.Body), "serve") {
		t.Fatalf("pprof cmdline: %s", r)
	}
	if r := do(t, http.MethodGet, a.URL()+"/debug/pprof/cmdline", nil, nil); r.Status == http.StatusOK {
		t.Fatalf("the registry address serves profiles: %s", r)
	}
	out, err := exec.Command(arcaBin, "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--pprof-addr", "0.0.0.0:0").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "loopback") {
		t.Fatalf("--pprof-addr 0.0.0.0:0: %v\n%s", err, out)
	}
}
