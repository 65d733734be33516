package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/minio"
)

// BenchmarkColdRounds compares cold pulls of the 256 MiB image through
// several servers in interleaved rounds: one op is one round, in which
// every target pulls once through a freshly started, empty server, in an
// order rotated by one each round (so no target always runs first, or
// always after the same neighbour, on a machine whose load drifts). Per
// round it computes the time ratio of each arca target to each peer, and
// reports per target the median time and per pair the median ratio with
// its spread (min–max over the rounds): on a shared, noisy machine a
// same-round ratio is far steadier than absolute times.
//
//	ColdRounds/{Lean,Crane}  targets from ARCA_BENCH_TARGETS (default
//	                         direct,arca,floor,dist2.8): direct, arca,
//	                         floor (the pass-through floor), dist2.8,
//	                         dist3, arca-s3 (arca keeping blobs in MinIO),
//	                         dist3-s3 (distribution v3 with its S3 driver
//	                         on the same MinIO), arca-base and
//	                         arca-alt (other arca builds, from
//	                         ARCA_BENCH_BASE_BIN and ARCA_BENCH_ALT_BIN)
//	ColdRounds/Wave32        per round and per arca target (ARCA_BENCH_WAVE,
//	                         default arca,arca-s3): 32 concurrent cold pulls
//	                         of the wave image through a fresh server, then
//	                         32 concurrent warm pulls of it; ratio cold/warm
//
// ARCA_BENCH_MODES limits the pull modes (default Lean,Crane).
//
//	go test -run '^$' -bench 'ColdRounds' -benchtime 7x ./internal/e2e
func BenchmarkColdRounds(b *testing.B) {
	e := newPTBench(b)
	targets := envList("ARCA_BENCH_TARGETS", "direct,arca,floor,dist2.8")
	for _, mode := range envList("ARCA_BENCH_MODES", "Lean,Crane") {
		b.Run(mode, func(b *testing.B) {
			e.rounds(b, targets, func(b *testing.B, tg string) (float64, float64, error) {
				s := e.start(b, tg, e.up.Host)
				defer s.stop()
				cpu0 := cpuSeconds(s.pid)
				t0 := time.Now()
				err := e.pull(b, s, e.big, mode, false)
				d, cpu := time.Since(t0).Seconds(), cpuSeconds(s.pid)-cpu0
				if err == nil && tg != "direct" { // what was cached is right
					err = e.pull(b, s, e.big, "Lean", true)
				}
				return d, cpu, err
			})
		})
	}
	b.Run("Wave32", func(b *testing.B) {
		var names []string
		for _, tg := range envList("ARCA_BENCH_WAVE", "arca,arca-s3") {
			names = append(names, tg+"-cold", tg+"-warm")
		}
		b.ResetTimer()
		samples := map[string][]float64{}
		peak := map[string]int64{}
		for i := 0; b.Loop(); i++ {
			for _, tg := range rotate(envList("ARCA_BENCH_WAVE", "arca,arca-s3"), i) {
				cold, warm, rss, err := e.coldWarmWave(b, tg, 32)
				if err != nil {
					b.Fatalf("%s: %v", tg, err)
				}
				samples[tg+"-cold"] = append(samples[tg+"-cold"], cold)
				samples[tg+"-warm"] = append(samples[tg+"-warm"], warm)
				samples[tg+"-cold/warm"] = append(samples[tg+"-cold/warm"], cold/warm)
				peak[tg] = max(peak[tg], rss)
			}
		}
		for _, n := range names {
			b.ReportMetric(median(samples[n]), n+"-s")
		}
		for _, tg := range envList("ARCA_BENCH_WAVE", "arca,arca-s3") {
			r := samples[tg+"-cold/warm"]
			b.ReportMetric(median(r), tg+"-cold/warm")
			b.ReportMetric(float64(peak[tg])/(1<<20), tg+"-peak-RSS-MiB")
			b.Logf("%-10s 32 cold / 32 warm wall time: median %.2f, min %.2f, max %.2f over %d rounds (cold %s s, warm %s s); peak RSS %.1f MiB",
				tg, median(r), slices.Min(r), slices.Max(r), len(r), fmtSamples(samples[tg+"-cold"]), fmtSamples(samples[tg+"-warm"]), float64(peak[tg])/(1<<20))
		}
	})
}

// rounds runs one round per op: every target once, through pull (which
// returns the wall time and the server's CPU time), in an order rotated
// per round; then it reports medians and ratio spreads.
func (e *ptBench) rounds(b *testing.B, targets []string, pull func(*testing.B, string) (float64, float64, error)) {
	samples := map[string][]float64{}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		t := map[string]float64{}
		var order []string
		for _, tg := range rotate(targets, i) {
			d, cpu, err := pull(b, tg)
			if err != nil {
				b.Fatalf("%s: %v", tg, err)
			}
			t[tg] = d
			samples[tg] = append(samples[tg], d)
			samples[tg+"-cpu"] = append(samples[tg+"-cpu"], cpu)
			order = append(order, fmt.Sprintf("%s %.3f (cpu %.2f)", tg, d, cpu))
		}
		b.Logf("round %d: %s", i+1, strings.Join(order, ", "))
		for _, a := range targets {
			for _, p := range targets {
				if isArca(a) && a != p {
					k := a + "/" + p
					samples[k] = append(samples[k], t[a]/t[p])
				}
			}
		}
		b.StartTimer()
	}
	for _, tg := range targets {
		b.ReportMetric(median(samples[tg]), tg+"-s")
		if tg != "direct" {
			b.ReportMetric(median(samples[tg+"-cpu"]), tg+"-cpu-s")
		}
	}
	for _, a := range targets {
		for _, p := range targets {
			if k := a + "/" + p; isArca(a) && a != p {
				r := samples[k]
				b.ReportMetric(median(r), k)
				b.Logf("time %-18s median %.2f, min %.2f, max %.2f over %d rounds", k, median(r), slices.Min(r), slices.Max(r), len(r))
			}
		}
	}
}

// cpuSeconds is a process's user + system CPU time so far (0 for pid 0).
func cpuSeconds(pid int) float64 {
	if pid == 0 {
		return 0
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the parenthesised command name; utime and stime
	// are the 14th and 15th of the line, in clock ticks (100 per second).
	f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	s, _ := strconv.ParseFloat(f[12], 64)
	return (u + s) / 100
}

func isArca(tg string) bool { return strings.HasPrefix(tg, "arca") }

// coldWarmWave starts a fresh tg, lets n lean clients pull the wave image
// at once (cold), then n again (warm); it returns both wall times and the
// server's peak RSS (after both; the peak after the cold wave is logged).
func (e *ptBench) coldWarmWave(b *testing.B, tg string, n int) (cold, warm float64, rss int64, err error) {
	s := e.start(b, tg, e.up.Host)
	defer s.stop()
	// What the server holds before any pull. RssFile is mostly the
	// binary's text pages; RssAnon is what arca itself allocated.
	b.Logf("%s: idle %s", tg, rssBreakdown(s.pid))
	wave := func() (float64, error) {
		start := make(chan struct{})
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				errs <- e.pull(b, s, e.wave, "Lean", i == 0)
			})
		}
		t0 := time.Now()
		close(start)
		wg.Wait()
		d := time.Since(t0).Seconds()
		close(errs)
		for err := range errs {
			if err != nil {
				return 0, err
			}
		}
		return d, nil
	}
	if cold, err = wave(); err != nil {
		return 0, 0, 0, fmt.Errorf("cold: %w", err)
	}
	b.Logf("%s: after the cold wave %s", tg, rssBreakdown(s.pid))
	if warm, err = wave(); err != nil {
		return 0, 0, 0, fmt.Errorf("warm: %w", err)
	}
	rss, err = vmHWM(s.pid)
	return cold, warm, rss, err
}

// rssBreakdown formats a process's peak and current resident set and the
// current set's anonymous and file-backed parts, in MiB.
func rssBreakdown(pid int) string {
	var out []string
	for _, f := range []string{"VmHWM", "VmRSS", "RssAnon", "RssFile"} {
		v, err := procStatus(pid, f)
		if err != nil {
			return err.Error()
		}
		out = append(out, fmt.Sprintf("%s %.1f", f, float64(v)/(1<<20)))
	}
	return strings.Join(out, ", ") + " MiB"
}

// s3 starts the benchmark's MinIO on first use and returns it.
func (e *ptBench) s3(b *testing.B) *minio.Server {
	b.Helper()
	e.minioOnce.Do(func() {
		bin := minio.Binary()
		if bin == "" {
			e.minioErr = fmt.Errorf("no minio binary: %s", minio.Install)
			return
		}
		e.minio, e.minioErr = minio.StartIn(bin, filepath.Join(e.dir, "minio"))
		if e.minioErr == nil {
			b.Cleanup(e.minio.Stop)
		}
	})
	if e.minioErr != nil {
		b.Fatal(e.minioErr)
	}
	return e.minio
}

// newBucket makes a fresh bucket (an empty store) on the bench's MinIO.
func (e *ptBench) newBucket(b *testing.B) (*minio.Server, string) {
	b.Helper()
	m := e.s3(b)
	bucket, err := m.NewBucket(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	return m, bucket
}

// s3Storage is distribution's storage section for its S3 driver on m.
func s3Storage(m *minio.Server, bucket string) string {
	return fmt.Sprintf(`  redirect:
    disable: true
  s3:
    accesskey: %s
    secretkey: %s
    region: us-east-1
    regionendpoint: %s
    forcepathstyle: true
    secure: false
    v4auth: true
    bucket: %s
    rootdirectory: /distribution
`, m.AccessKey, m.SecretKey, m.Endpoint(), bucket)
}

// rotate moves the first i%len(xs) elements to the end.
func rotate(xs []string, i int) []string {
	if len(xs) == 0 {
		return xs
	}
	k := i % len(xs)
	return append(append(make([]string, 0, len(xs)), xs[k:]...), xs[:k]...)
}

func envList(name, def string) []string {
	v := os.Getenv(name)
	if v == "" {
		v = def
	}
	return strings.Split(v, ",")
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func fmtSamples(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.2f", x))
	}
	return strings.Join(parts, " ")
}
