package e2e

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/pgtest"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// TestClusterBenchmarks measures three replicas on one PostgreSQL and one
// MinIO (ARCA_CLUSTER_BENCH=1; it reports, it asserts only correctness):
// warm pull throughput when the load goes to 1, 2 or 3 replicas, the
// time to first byte of a cold pull on a replica that follows another's
// fetch, and PostgreSQL statements per warm manifest request.
func TestClusterBenchmarks(t *testing.T) {
	if os.Getenv("ARCA_CLUSTER_BENCH") == "" {
		t.Skip("set ARCA_CLUSTER_BENCH=1 to run the cluster benchmarks")
	}
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	warm := newImage(t, 1400, "amd64", 4<<20)
	cold := newImage(t, 1401, "amd64", 16<<20)
	seedImage(t, up, "library/warm", "v1", warm)
	seedImage(t, up, "library/cold", "v1", cold)
	c := startCluster(t, 3, false, "--insecure-upstream", proxy.Host(), "--access-log=false")
	c.nodes[0].cacheRule(t, "lib-rule", proxy.Host()+"/library/*", "lib/*")
	c.waitRule(t, "lib/warm", "lib-rule")
	layer := warm.Layers[0]
	blobPath := "/v2/lib/warm/blobs/" + sha(layer)
	manifestPath := "/v2/lib/warm/manifests/v1"
	for _, a := range c.nodes {
		if err := pullImage(a, "lib/warm", "v1", warm); err != nil {
			t.Fatal(err)
		}
	}

	// Warm pulls: 6 clients with keep-alive connections, spread over the
	// first k replicas, for a fixed time.
	const clients = 6
	load := func(k int, path string, size int64, d time.Duration) (reqs int64, elapsed time.Duration) {
		var n atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(d)
		start := time.Now()
		for i := range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				lc := newLeanClient(c.nodes[i%k].Addr)
				defer lc.Close()
				for time.Now().Before(stop) {
					st, got, err := lc.get(path, mtAcceptAll, nil)
					if err != nil || st != http.StatusOK || (size > 0 && got != size) {
						t.Errorf("GET %s on replica %d: %d, %d bytes, %v", path, i%k, st, got, err)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return n.Load(), time.Since(start)
	}
	// Where the CPU goes: the replicas, MinIO (every warm blob GET reads
	// the object), and the rest (clients, other load on the machine).
	cpu := func() (arcaSec, minioSec, machineSec float64) {
		for _, a := range c.nodes {
			arcaSec += cpuSeconds(a.Pid())
		}
		return arcaSec, cpuSeconds(c.minio.Pid()), machineCPUSeconds()
	}
	for k := 1; k <= 3; k++ {
		a0, m0, all0 := cpu()
		reqs, el := load(k, blobPath, int64(len(layer)), 8*time.Second)
		a1, m1, all1 := cpu()
		t.Logf("warm blob pulls, load on %d replica(s): %.0f MiB/s (%d GETs of 4 MiB in %s); CPU cores busy: arca %.2f, MinIO %.2f, machine %.2f of 2", k,
			float64(reqs)*float64(len(layer))/(1<<20)/el.Seconds(), reqs, el.Round(time.Millisecond),
			(a1-a0)/el.Seconds(), (m1-m0)/el.Seconds(), (all1-all0)/el.Seconds())
	}
	for k := 1; k <= 3; k++ {
		reqs, el := load(k, manifestPath, int64(len(warm.Manifest)), 5*time.Second)
		t.Logf("warm manifest GETs, load on %d replica(s): %.0f/s", k, float64(reqs)/el.Seconds())
	}

	// PostgreSQL statements per warm manifest GET (pg_stat_statements),
	// less what the replicas run meanwhile on their own (polls).
	const gets = 300
	idleFrom := pgtest.Statements(t, c.db)
	time.Sleep(2 * time.Second)
	idle := pgtest.Statements(t, c.db) - idleFrom
	lc := newLeanClient(c.nodes[0].Addr)
	from, start := pgtest.Statements(t, c.db), time.Now()
	for range gets {
		if st, _, err := lc.get(manifestPath, mtAcceptAll, nil); err != nil || st != http.StatusOK {
			t.Fatalf("manifest: %d %v", st, err)
		}
	}
	el := time.Since(start)
	lc.Close()
	total := pgtest.Statements(t, c.db) - from
	background := float64(idle) * el.Seconds() / 2
	t.Logf("PostgreSQL statements per warm manifest GET: %.2f (%d over %d GETs in %s, ~%.0f of them background)",
		(float64(total)-background)/gets, total, gets, el.Round(time.Millisecond), background)

	// Cold pull: the upstream sends the first MiB, stalls 2s, then the rest;
	// replica 0 fetches, replicas 1 and 2 follow it 300ms later.
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, CutAfter: 1 << 20, Stall: 2 * time.Second})
	big := cold.Layers[0]
	begin := time.Now()
	type ttfb struct {
		who         string
		first, done time.Duration
		err         error
	}
	res := make(chan ttfb, 3)
	for i, a := range c.nodes {
		if i > 0 {
			time.Sleep(300 * time.Millisecond)
		}
		go func() {
			at := time.Now()
			var first time.Duration
			err := pullBlob(a, "lib/cold", big, func(ft time.Time) { first = ft.Sub(at) })
			res <- ttfb{fmt.Sprintf("replica %d (started %s after replica 0)", i, at.Sub(begin).Round(time.Millisecond)), first, time.Since(at), err}
		}()
	}
	for range 3 {
		r := <-res
		if r.err != nil {
			t.Error(r.err)
			continue
		}
		t.Logf("cold 16 MiB pull on %s: first byte after %s, whole after %s", r.who, r.first.Round(time.Millisecond), r.done.Round(time.Millisecond))
	}
	if n := upstreamGETs(up, "/blobs/"+sha(big)); n != 1 {
		t.Errorf("cold layer: %d upstream GETs, want 1", n)
	}
}

// machineCPUSeconds is the busy CPU time of the whole machine.
func machineCPUSeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy float64
	for i, v := range f[1:] {
		n, _ := strconv.ParseFloat(v, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy / 100
}
