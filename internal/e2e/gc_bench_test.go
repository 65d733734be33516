package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
)

// BenchmarkPullWhileGC measures blob pull throughput (4 clients, an 8 MiB
// blob, 5 seconds) on a store of 5000 more blobs, idle and while garbage
// collection runs back to back (--gc-interval 50ms: each run pages
// through every row and lists the blob store; the first deletes the
// garbage). Reported figures, not assertions: the machine is shared.
func BenchmarkPullWhileGC(b *testing.B) {
	dir := b.TempDir()
	start := func(interval string) *arca {
		return &arca{arcaproc.Start(b, arcaproc.Options{Bin: arcaBin, DataDir: dir,
			Args: []string{"--gc-interval", interval, "--gc-grace", "1s"}, Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}})}
	}
	a := start("0")
	layer := randomBytes(42, 8<<20)
	d := sha(layer)
	req, _ := http.NewRequest(http.MethodPost, a.URL()+"/v2/bench/blob/blobs/uploads/?digest="+d, bytes.NewReader(layer))
	resp, err := httpc.Do(req)
	if err != nil || resp.StatusCode != http.StatusCreated {
		b.Fatalf("push: %v %v", resp, err)
	}
	resp.Body.Close()
	garbage(b, a, "bench/garbage", 1, 2500)
	for i := range 2500 { // kept: linked, never deleted
		body := []byte(fmt.Sprintf("kept %d", i))
		req, _ := http.NewRequest(http.MethodPost, a.URL()+"/v2/bench/kept/blobs/uploads/?digest="+sha(body), bytes.NewReader(body))
		resp, err := httpc.Do(req)
		if err != nil || resp.StatusCode != http.StatusCreated {
			b.Fatalf("push: %v %v", resp, err)
		}
		resp.Body.Close()
	}
	measure := func(a *arca) float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var total atomic.Int64
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if _, err := fetchVerified(a.URL()+"/v2/bench/blob/blobs/"+d, d); err == nil {
						total.Add(int64(len(layer)))
					}
				}
			}()
		}
		wg.Wait()
		return float64(total.Load()) / 5 / (1 << 20)
	}
	idle := measure(a)
	a.Stop()
	a = start("50ms")
	busy := measure(a)
	runs := a.metric(b, "arca_gc_runs_total", `result="success"`)
	b.ReportMetric(idle, "idle-MiB/s")
	b.ReportMetric(busy, "gc-MiB/s")
	b.ReportMetric(runs, "gc-runs")
	b.Logf("pull throughput idle %.0f MiB/s, while GC runs %.0f MiB/s (%.0f GC runs, %.0f blobs reclaimed)", idle, busy, runs, a.metric(b, "arca_gc_deleted_total", `kind="blob"`))
}
