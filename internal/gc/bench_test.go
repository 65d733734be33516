package gc_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/gc"
	"github.com/arcacache/arca/internal/metadata"
)

// seedRows writes n blobs rows straight into a fresh SQLite store (one
// transaction: the store's own path is one transaction per blob), half
// linked to a repository, half unreferenced; withBytes also stores each
// blob's bytes.
func seedRows(b *testing.B, n int, withBytes bool) (metadata.Store, blobstore.Backend) {
	b.Helper()
	ctx := context.Background()
	dir := b.TempDir()
	path := filepath.Join(dir, "arca.db")
	s, err := metadata.OpenSQLite(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	s.Close()
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		b.Fatal(err)
	}
	blobs, err := blobstore.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		b.Fatal(err)
	}
	cs := &content.Store{Blobs: blobs}
	tx, err := raw.Begin()
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixMicro()
	for i := range n {
		body := []byte(fmt.Sprintf("blob %d", i))
		d := digest.FromBytes(body)
		if _, err := tx.Exec(`INSERT INTO blobs(digest, size, created_at) VALUES ($1, $2, $3)`, d.String(), len(body), now); err != nil {
			b.Fatal(err)
		}
		if i%2 == 0 {
			if _, err := tx.Exec(`INSERT INTO repo_blobs(registry, repo, digest) VALUES ('r', 'app', $1)`, d.String()); err != nil {
				b.Fatal(err)
			}
		}
		if withBytes {
			w, err := cs.NewWriter(ctx, d, int64(len(body)))
			if err != nil {
				b.Fatal(err)
			}
			_, _ = w.Write(body)
			if err := w.Commit(ctx, d, int64(len(body))); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		b.Fatal(err)
	}
	raw.Close()
	s, err = metadata.OpenSQLite(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s, blobs
}

// peakHeap samples the heap in use while fn runs.
func peakHeap(fn func()) uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	fn()
	close(stop)
	wg.Wait()
	return peak.Load()
}

// BenchmarkGC times the two runs that reclaim half of n blobs (the mark
// run, then the sweep run a grace period later) and reports the peak heap
// in use during them. 10k blobs with their bytes on the filesystem; 100k
// metadata only (the blob store holds none of them).
func BenchmarkGC(b *testing.B) {
	for _, c := range []struct {
		n         int
		withBytes bool
	}{{10_000, true}, {100_000, false}} {
		b.Run(fmt.Sprintf("blobs=%d/bytes=%v", c.n, c.withBytes), func(b *testing.B) {
			logger := slog.New(slog.NewTextHandler(io.Discard, nil))
			var markT, sweepT time.Duration
			var peak uint64
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				meta, blobs := seedRows(b, c.n, c.withBytes)
				col, err := gc.New(meta.(gc.Store), blobs, gc.Options{Grace: time.Millisecond, UploadMaxAge: time.Hour, Holder: "bench", Logger: logger})
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				b.StartTimer()
				p := peakHeap(func() {
					start := time.Now()
					r1, err := col.Run(context.Background(), gc.Request{})
					markT += time.Since(start)
					if err != nil || r1.Store.Marked != int64(c.n/2) {
						b.Fatalf("mark run: %+v, %v", r1, err)
					}
					time.Sleep(2 * time.Millisecond)
					start = time.Now()
					r2, err := col.Run(context.Background(), gc.Request{})
					sweepT += time.Since(start)
					if err != nil || r2.Store.Blobs != int64(c.n/2) {
						b.Fatalf("sweep run: %+v, %v", r2, err)
					}
				})
				peak = max(peak, p)
			}
			b.ReportMetric(markT.Seconds()/float64(b.N), "mark-s/op")
			b.ReportMetric(sweepT.Seconds()/float64(b.N), "sweep-s/op")
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
		})
	}
}
