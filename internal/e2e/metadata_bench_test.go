package e2e

import (
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/pgtest"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// BenchmarkMetadataBackends: the same server on the embedded store and on
// PostgreSQL (a private cluster on loopback, fsync off), side by side:
//
//	<backend>/ManifestGet64  GETs of a pushed manifest by tag over 64 connections (req/s)
//
// and, logged for PostgreSQL (pg_stat_statements: the statements the
// server ran, BEGIN/COMMIT included; the SQL is the same on both engines),
// the metadata round trips of one warm manifest GET by tag, one cold
// manifest GET through a rule, and one cold blob GET through a rule.
func BenchmarkMetadataBackends(b *testing.B) {
	up := upstreamreg.Start(b, upstreamreg.Options{})
	imgs := seedPullThrough(b, up, 300)
	im := newImage(b, 77, "amd64", 4<<10)
	for _, backend := range []string{"sqlite", "postgres"} {
		b.Run(backend, func(b *testing.B) {
			url := ""
			if backend == "postgres" {
				url = pgtest.NewDatabase(b)
			}
			a := startCachingArca(b, []string{up.Host}, nil, "--metadata", url, "--access-log=false")
			a.cacheRule(b, "library-wild", up.Host+"/library/*", "lib/*")
			a.pushImage(b, "bench/pushed", "v1", im)
			if url != "" {
				// settled waits for background work (a cold blob's link
				// commits after the response) and returns the count.
				settled := func() int64 {
					n := pgtest.Statements(b, url)
					for {
						time.Sleep(300 * time.Millisecond)
						m := pgtest.Statements(b, url)
						if m == n {
							return n
						}
						n = m
					}
				}
				const gets = 50
				n0 := settled()
				for range gets {
					getCached(b, a.URL()+"/v2/bench/pushed/manifests/v1", im.Digest())
				}
				b.Logf("postgres: %.1f statements per warm manifest GET by tag", float64(settled()-n0)/gets)
				n0 = settled()
				getCached(b, a.URL()+"/v2/lib/app/manifests/v1", imgs.app.Digest())
				b.Logf("postgres: %d statements for a cold manifest GET by tag through a rule", settled()-n0)
				for i, bl := range imgs.app.blobs() {
					n0 = settled()
					getCached(b, a.URL()+"/v2/lib/app/blobs/"+sha(bl), sha(bl))
					b.Logf("postgres: %d statements for cold blob %d (%d bytes) through a rule", settled()-n0, i, len(bl))
				}
			}
			b.Run("ManifestGet64", func(b *testing.B) {
				b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				path := "/v2/bench/pushed/manifests/v1"
				b.RunParallel(func(pb *testing.PB) {
					c := newLeanClient(a.Addr)
					defer c.Close()
					for pb.Next() {
						if st, n, err := c.get(path, mtOCIManifest, nil); err != nil || st != http.StatusOK || n != int64(len(im.Manifest)) {
							b.Errorf("manifest GET: status %d, %d bytes, %v", st, n, err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
			})
		})
	}
}
