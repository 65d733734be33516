package gc_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/gc"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

type env struct {
	meta  metadata.Store
	blobs blobstore.Backend
	cs    *content.Store
}

// engines runs fn on SQLite and, when PostgreSQL is installed, on it too
// (blobs on the filesystem; the S3 backend runs in the e2e tests).
func engines(t *testing.T, fn func(t *testing.T, e env)) {
	for _, eng := range []string{"sqlite", "postgres"} {
		t.Run(eng, func(t *testing.T) {
			ctx := context.Background()
			var meta metadata.Store
			var err error
			if eng == "sqlite" {
				meta, err = metadata.OpenSQLite(ctx, filepath.Join(t.TempDir(), "arca.db"))
			} else {
				pgtest.SkipIfMissing(t)
				meta, err = metadata.OpenPostgres(ctx, pgtest.NewDatabase(t))
			}
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { meta.Close() })
			blobs, err := blobstore.NewFS(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			fn(t, env{meta: meta, blobs: blobs, cs: &content.Store{Blobs: blobs, Index: meta, Uploads: meta}})
		})
	}
}

func newCollector(t *testing.T, e env, grace time.Duration) *gc.Collector {
	t.Helper()
	c, err := gc.New(e.meta, e.blobs, gc.Options{Grace: grace, UploadMaxAge: time.Hour, Holder: t.Name(), PageSize: 7,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (e env) push(t testing.TB, repo string, body []byte) digest.Digest {
	t.Helper()
	d, err := e.tryPush(context.Background(), repo, body)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (e env) tryPush(ctx context.Context, repo string, body []byte) (digest.Digest, error) {
	d := digest.FromBytes(body)
	w, err := e.cs.NewWriter(ctx, d, int64(len(body)))
	if err != nil {
		return d, err
	}
	if _, err := w.Write(body); err != nil {
		w.Cancel()
		return d, err
	}
	return d, e.cs.CommitBlob(ctx, w, "r", repo, d, int64(len(body)))
}

func (e env) stored(t testing.TB, d digest.Digest) bool {
	t.Helper()
	_, err := e.blobs.Stat(context.Background(), d)
	if err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func run(t *testing.T, c *gc.Collector, req gc.Request) gc.Result {
	t.Helper()
	res, err := c.Run(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// An unlinked blob is marked by one run and deleted (bytes, then row) by
// a run a grace period later; what is referenced stays; a dry run
// changes nothing.
func TestCollectReclaimsUnreferenced(t *testing.T) {
	engines(t, func(t *testing.T, e env) {
		ctx := context.Background()
		grace := 300 * time.Millisecond
		c := newCollector(t, e, grace)
		kept := e.push(t, "app", []byte("kept layer"))
		gone := e.push(t, "app", []byte("unlinked layer"))
		if _, err := e.cs.PutManifest(ctx, "r", "app", digest.FromString("{}"), []byte("{}"), manifestOf(kept), "v1"); err != nil {
			t.Fatal(err)
		}
		if err := e.meta.UnlinkBlob(ctx, "r", "app", gone); err != nil {
			t.Fatal(err)
		}
		if res := run(t, c, gc.Request{DryRun: true}); res.Store.Marked != 1 || res.Store.Blobs != 0 {
			t.Fatalf("dry run before any mark: %+v, want 1 to mark", res)
		}
		if res := run(t, c, gc.Request{}); res.Store.Marked != 1 || res.Store.Blobs != 0 {
			t.Fatalf("first run: %+v, want 1 marked, none deleted", res)
		}
		if !e.stored(t, gone) {
			t.Fatal("deleted within the grace period")
		}
		time.Sleep(grace + 50*time.Millisecond)
		if res := run(t, c, gc.Request{DryRun: true}); res.Store.Blobs != 1 || res.Store.BlobBytes != int64(len("unlinked layer")) {
			t.Fatalf("dry run after the grace period: %+v, want 1 blob", res)
		}
		if !e.stored(t, gone) {
			t.Fatal("a dry run deleted")
		}
		if res := run(t, c, gc.Request{}); res.Store.Blobs != 1 || res.Store.BlobBytes != int64(len("unlinked layer")) {
			t.Fatalf("second run: %+v, want 1 blob deleted", res)
		}
		if e.stored(t, gone) {
			t.Fatal("unreferenced blob still stored")
		}
		if !e.stored(t, kept) || !e.stored(t, digest.FromString("{}")) {
			t.Fatal("referenced content deleted")
		}
		if res := run(t, c, gc.Request{}); res.Store.Blobs != 0 || res.Store.Marked != 0 {
			t.Fatalf("third run: %+v, want nothing", res)
		}
	})
}

// manifestOf is a parsed image manifest whose one layer is layer.
func manifestOf(layer digest.Digest) *oci.Manifest {
	return &oci.Manifest{MediaType: oci.MediaTypeOCIManifest, Layers: []oci.Descriptor{{Digest: layer}}}
}

// Untagged manifests go only where the registry's policy is enabled;
// their blobs follow a grace period later.
func TestCollectUntaggedManifests(t *testing.T) {
	engines(t, func(t *testing.T, e env) {
		ctx := context.Background()
		grace := 200 * time.Millisecond
		c := newCollector(t, e, grace)
		layer := e.push(t, "app", []byte("layer of an untagged image"))
		if err := e.meta.UnlinkBlob(ctx, "r", "app", layer); err != nil { // only the manifest keeps it
			t.Fatal(err)
		}
		body := []byte(`{"untagged":1}`)
		md := digest.FromBytes(body)
		if _, err := e.cs.PutManifest(ctx, "r", "app", md, body, manifestOf(layer)); err != nil {
			t.Fatal(err)
		}
		if res := run(t, c, gc.Request{Registry: "r"}); res.Manifests != 0 || res.Store != nil {
			t.Fatalf("policy off: %+v", res)
		}
		if err := e.meta.PutRetentionPolicy(ctx, metadata.RetentionPolicy{Registry: "r", Enabled: true, Days: 0}); err != nil {
			t.Fatal(err)
		}
		if res := run(t, c, gc.Request{Registry: "other"}); res.Manifests != 0 {
			t.Fatalf("another registry's run: %+v", res)
		}
		if res := run(t, c, gc.Request{}); res.Manifests != 1 || res.ManifestBytes != int64(len(body)) || res.Store.Marked != 2 {
			t.Fatalf("policy on: %+v, want the manifest deleted and it and its layer marked", res)
		}
		if _, err := e.meta.GetManifest(ctx, "r", "app", md); !errors.Is(err, metadata.ErrNotFound) {
			t.Fatal("untagged manifest still recorded")
		}
		time.Sleep(grace + 50*time.Millisecond)
		if res := run(t, c, gc.Request{}); res.Store.Blobs != 2 {
			t.Fatalf("after the grace period: %+v, want the manifest's bytes and the layer", res)
		}
		if e.stored(t, layer) || e.stored(t, md) {
			t.Fatal("bytes left")
		}
	})
}

// Bytes no row records are claimed and deleted in one run; a crash that
// left a claim is finished by the next run.
func TestCollectOrphansAndResumesClaims(t *testing.T) {
	engines(t, func(t *testing.T, e env) {
		ctx := context.Background()
		c := newCollector(t, e, time.Hour)
		offline := &content.Store{Blobs: e.blobs} // records nothing
		body := []byte("orphan")
		d := digest.FromBytes(body)
		w, _ := offline.NewWriter(ctx, d, int64(len(body)))
		_, _ = w.Write(body)
		if err := w.Commit(ctx, d, int64(len(body))); err != nil {
			t.Fatal(err)
		}
		// A claim a killed run left: row claimed, bytes still there.
		left := e.push(t, "app", []byte("claimed by a run that died"))
		if err := e.meta.UnlinkBlob(ctx, "r", "app", left); err != nil {
			t.Fatal(err)
		}
		if _, err := e.meta.MarkBlobs(ctx, []digest.Digest{left}, time.Now().Add(-2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if cl, err := e.meta.ClaimBlobs(ctx, []digest.Digest{left}, time.Now().Add(-time.Hour), time.Now()); err != nil || len(cl) != 1 {
			t.Fatal(cl, err)
		}
		res := run(t, c, gc.Request{})
		if res.Store.Orphans != 1 || res.Store.Blobs != 2 {
			t.Fatalf("run: %+v, want the orphan and the claimed blob", res)
		}
		if e.stored(t, d) || e.stored(t, left) {
			t.Fatal("bytes left")
		}
	})
}

// The invariant under concurrency: writers push (the same contents again
// and again, so GC deletes what they re-push), mount, unlink and record
// manifests while GC runs back to back with a short grace period (longer
// than a writer takes from prepare to link, as --gc-grace must be). Every
// link and manifest reference left at the end has its bytes, and once
// writers stop two runs a grace period apart leave no unreferenced blob.
// The grace period is 2s: with 100ms, a loaded -race run was seen
// taking longer than that from prepare to link, which breaks the rule the
// invariant rests on (the links were refused, and a reference was left to
// bytes GC had deleted); whole pushes took up to 1.05s at a load of 18 on
// 2 cores.
func TestConcurrentWritersKeepReferencedBlobs(t *testing.T) {
	engines(t, func(t *testing.T, e env) {
		grace := 2 * time.Second
		c := newCollector(t, e, grace)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		contents := make([][]byte, 24)
		for i := range contents {
			contents[i] = []byte(fmt.Sprintf("content %d %s", i, bytes.Repeat([]byte("x"), i*100)))
		}
		var wg sync.WaitGroup
		var ops, runs, deleted, longestPush atomic.Int64
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				res, err := c.Run(ctx, gc.Request{})
				if err != nil && ctx.Err() == nil {
					t.Errorf("gc: %v", err)
					return
				}
				runs.Add(1)
				deleted.Add(res.Store.Blobs)
			}
		}()
		// Writers and GC race for at least 3 s and until GC has deleted
		// something (a loaded machine may need longer for a blob to be
		// marked, outlive the grace and be claimed); a minute at most.
		go func() {
			start := time.Now()
			for time.Since(start) < 3*time.Second || (deleted.Load() == 0 && time.Since(start) < time.Minute) {
				time.Sleep(50 * time.Millisecond)
			}
			cancel()
		}()
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(w), 1))
				repo := fmt.Sprintf("w%d", w)
				for ctx.Err() == nil {
					body := contents[rng.IntN(len(contents))]
					d := digest.FromBytes(body)
					var err error
					switch op := rng.IntN(10); {
					case op < 4:
						start := time.Now()
						_, err = e.tryPush(ctx, repo, body)
						for took := int64(time.Since(start)); ; {
							if l := longestPush.Load(); took <= l || longestPush.CompareAndSwap(l, took) {
								break
							}
						}
					case op < 6:
						// A mount from another writer's repository: refused
						// (ErrNotFound) when it holds no link or GC deletes it.
						from := fmt.Sprintf("w%d", rng.IntN(4))
						var size int64
						if size, err = e.meta.BlobSize(ctx, "r", from, d); err == nil {
							err = e.meta.LinkBlob(ctx, "r", repo, d, size)
						}
						if errors.Is(err, metadata.ErrNotFound) {
							err = nil
						}
					case op < 9:
						if err = e.meta.UnlinkBlob(ctx, "r", repo, d); errors.Is(err, metadata.ErrNotFound) {
							err = nil
						}
					default:
						// A manifest referencing a blob the repository holds.
						if _, err = e.meta.BlobSize(ctx, "r", repo, d); err == nil {
							mb := []byte(fmt.Sprintf(`{"layer":%q,"n":%d}`, d, rng.IntN(3)))
							_, err = e.cs.PutManifest(ctx, "r", repo, digest.FromBytes(mb), mb, manifestOf(d))
							if err == nil && rng.IntN(2) == 0 {
								err = e.meta.DeleteManifest(ctx, "r", repo, digest.FromBytes(mb))
							}
						}
						if errors.Is(err, metadata.ErrNotFound) {
							err = nil
						}
					}
					if err != nil && ctx.Err() == nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					ops.Add(1)
				}
			}()
		}
		wg.Wait()
		t.Logf("%d writer operations, %d GC runs deleted %d blobs; the longest push took %s (prepare to link is part of it), the grace period is %s",
			ops.Load(), runs.Load(), deleted.Load(), time.Duration(longestPush.Load()), grace)
		if deleted.Load() == 0 {
			t.Fatal("GC deleted nothing while writers ran: the race was not exercised")
		}
		checkReferencedStored(t, e)
		c2 := newCollector(t, e, grace)
		for range 2 {
			time.Sleep(2 * grace)
			run(t, c2, gc.Request{})
		}
		checkReferencedStored(t, e)
		rows, n := 0, 0
		var after digest.Digest
		for {
			page, more, err := e.meta.GCBlobs(context.Background(), after, 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range page {
				rows++
				if !b.Referenced {
					t.Errorf("unreferenced blob %s left after two runs", b.Digest)
				}
			}
			if !more {
				break
			}
			after = page[len(page)-1].Digest
		}
		if err := e.blobs.List(context.Background(), func(digest.Digest, int64) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != rows {
			t.Errorf("%d blobs stored, %d rows: bytes without a row left", n, rows)
		}
	})
}

// checkReferencedStored fails for every repository link or manifest
// (and manifest reference) whose bytes are not stored intact.
func checkReferencedStored(t *testing.T, e env) {
	t.Helper()
	ctx := context.Background()
	repos, _, err := e.meta.ListRepositories(ctx, "r", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, repo := range repos {
		ds, _, err := e.meta.ListRepoBlobs(ctx, "r", repo, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		ms, _, err := e.meta.ListManifests(ctx, "r", repo, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range append(ds, ms...) {
			checked++
			rc, err := e.blobs.Open(ctx, d)
			if err != nil {
				t.Errorf("%s@%s referenced but not stored: %v", repo, d, err)
				continue
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || digest.FromBytes(b) != d {
				t.Errorf("%s@%s: stored bytes do not match (%v)", repo, d, err)
			}
		}
	}
	t.Logf("%d references checked", checked)
}

// One collector at a time per store, whichever process holds the lease:
// a second one (another replica on the same database) is told ErrBusy.
func TestOneCollectorAtATime(t *testing.T) {
	engines(t, func(t *testing.T, e env) {
		ctx := context.Background()
		other, err := gc.New(e.meta, e.blobs, gc.Options{Grace: time.Hour, UploadMaxAge: time.Hour, Holder: "replica-2",
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		c := newCollector(t, e, time.Hour)
		// replica-2 is in the middle of a run: its progress callback
		// starts this replica's run.
		busy := make(chan error, 1)
		_, err = other.Run(ctx, gc.Request{Progress: func(gc.Result) {
			select {
			case busy <- func() error { _, err := c.Run(ctx, gc.Request{}); return err }():
			default:
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		if err := <-busy; !errors.Is(err, gc.ErrBusy) {
			t.Fatalf("a run while another holds the lease: %v, want ErrBusy", err)
		}
		if _, err := c.Run(ctx, gc.Request{}); err != nil {
			t.Fatalf("a run once the other ended: %v", err)
		}
	})
}

// A registry's run purges that registry's abandoned upload sessions and
// their parts only; stale parts no session owns are store-wide (StoreWide
// or a run of every registry); another registry's sessions are left.
func TestCollectUploadsByRegistry(t *testing.T) {
	engines(t, func(t *testing.T, e env) {
		ctx := context.Background()
		c, err := gc.New(e.meta, e.blobs, gc.Options{Grace: time.Hour, UploadMaxAge: 200 * time.Millisecond, Holder: t.Name(),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		session := func(reg string) (string, []string) {
			t.Helper()
			id := blobstore.NewID()
			if err := e.meta.CreateUpload(ctx, reg, "app", id); err != nil {
				t.Fatal(err)
			}
			w, err := e.cs.ResumeUpload(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("chunk of " + reg)); err != nil {
				t.Fatal(err)
			}
			if err := w.Save(ctx); err != nil {
				t.Fatal(err)
			}
			parts, err := e.cs.UploadParts(ctx, id)
			if err != nil || len(parts) != 1 {
				t.Fatalf("parts %v %v", parts, err)
			}
			return id, parts
		}
		idA, partsA := session("a")
		idB, partsB := session("b")
		stray := blobstore.NewID()
		p, err := e.blobs.Stage(ctx, stray)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Write([]byte("no session owns this")); err != nil {
			t.Fatal(err)
		}
		if err := p.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // all of it older than UploadMaxAge
		staged := func() map[string]bool {
			t.Helper()
			m := map[string]bool{}
			if err := e.blobs.ListStaged(ctx, func(id string, _ time.Time) error { m[id] = true; return nil }); err != nil {
				t.Fatal(err)
			}
			return m
		}
		exists := func(reg, id string) bool {
			t.Helper()
			ok, err := e.meta.UploadExists(ctx, reg, "app", id)
			if err != nil {
				t.Fatal(err)
			}
			return ok
		}
		for _, dry := range []bool{true, false} {
			res := run(t, c, gc.Request{Registry: "a", DryRun: dry})
			if res.Uploads != 1 || res.UploadParts != 1 || res.Store != nil {
				t.Fatalf("a's run (dry %v): %+v, want a's one session and its part, no store-wide part", dry, res)
			}
		}
		if s := staged(); exists("a", idA) || s[partsA[0]] || !exists("b", idB) || !s[partsB[0]] || !s[stray] {
			t.Fatalf("after a's run: a's session %v, b's %v, staged %v", exists("a", idA), exists("b", idB), s)
		}
		if res := run(t, c, gc.Request{Registry: "a", StoreWide: true}); res.Uploads != 0 || res.Store == nil || res.Store.StrayParts != 1 {
			t.Fatalf("a's store-wide run: %+v, want the stray part only", res)
		}
		if s := staged(); !exists("b", idB) || !s[partsB[0]] || s[stray] {
			t.Fatalf("after a's store-wide run: b's session %v, staged %v", exists("b", idB), s)
		}
		if res := run(t, c, gc.Request{}); res.Uploads != 1 || res.UploadParts != 1 {
			t.Fatalf("run of every registry: %+v, want b's session", res)
		}
		if exists("b", idB) || len(staged()) != 0 {
			t.Fatalf("after the full run: b's session %v, staged %v", exists("b", idB), staged())
		}
	})
}

// A Reclaim run marks, waits out the grace period holding the lease, and
// sweeps again: what stayed unreferenced goes in that one run; what was
// linked again while it waited stays.
func TestCollectReclaimInOneRun(t *testing.T) {
	engines(t, func(t *testing.T, e env) {
		ctx := context.Background()
		grace := 300 * time.Millisecond
		c := newCollector(t, e, grace)
		gone := e.push(t, "app", []byte("unlinked for good"))
		back := e.push(t, "app", []byte("linked again while GC waits"))
		for _, d := range []digest.Digest{gone, back} {
			if err := e.meta.UnlinkBlob(ctx, "r", "app", d); err != nil {
				t.Fatal(err)
			}
		}
		var phases []string
		start := time.Now()
		res, err := c.Run(ctx, gc.Request{Reclaim: true, Progress: func(p gc.Result) {
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
			if p.Phase == "grace" && !p.GraceUntil.IsZero() { // waiting
				if err := e.meta.LinkBlob(ctx, "r", "other", back, int64(len("linked again while GC waits"))); err != nil {
					t.Error(err)
				}
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Store.Marked != 2 || res.Store.Blobs != 1 || res.Store.BlobBytes != int64(len("unlinked for good")) {
			t.Fatalf("reclaim run: %+v (store %+v), want 2 marked and the one still unreferenced deleted", res, res.Store)
		}
		if took := time.Since(start); took < grace {
			t.Fatalf("the run took %s, less than the grace period", took)
		}
		if e.stored(t, gone) || !e.stored(t, back) {
			t.Fatalf("after the run: unreferenced stored %v, linked again stored %v", e.stored(t, gone), e.stored(t, back))
		}
		if want := "uploads manifests blobs grace reclaim orphans done"; strings.Join(phases, " ") != want {
			t.Fatalf("phases %v, want %s", phases, want)
		}
		// Nothing marked: no wait.
		start = time.Now()
		if res := run(t, c, gc.Request{Reclaim: true}); res.Store.Blobs != 0 || !res.GraceUntil.IsZero() || time.Since(start) > grace {
			t.Fatalf("reclaim run with nothing to reclaim: %+v after %s", res, time.Since(start))
		}
	})
}

// What Progress hands over is a snapshot the run no longer changes: the
// management API encodes it while the run goes on (a data race before).
func TestProgressIsASnapshot(t *testing.T) {
	engines(t, func(t *testing.T, e env) {
		ctx := context.Background()
		c := newCollector(t, e, 50*time.Millisecond)
		for i := range 20 {
			d := e.push(t, "app", []byte(fmt.Sprintf("garbage %d", i)))
			if err := e.meta.UnlinkBlob(ctx, "r", "app", d); err != nil {
				t.Fatal(err)
			}
		}
		type seen struct {
			got  gc.Result
			then gc.StoreResult
		}
		var snaps []seen
		res, err := c.Run(ctx, gc.Request{Reclaim: true, Progress: func(p gc.Result) {
			if p.Store != nil {
				snaps = append(snaps, seen{p, *p.Store})
			}
		}})
		if err != nil {
			t.Fatal(err)
		}
		if res.Store == nil || res.Store.Blobs != 20 {
			t.Fatalf("run: %+v, want the 20 unlinked blobs deleted", res.Store)
		}
		for i, s := range snaps {
			if *s.got.Store != s.then {
				t.Fatalf("progress %d (%s) changed after it was handed over: %+v then, %+v now", i, s.got.Phase, s.then, *s.got.Store)
			}
			if s.got.Store == res.Store {
				t.Fatalf("progress %d shares the run's own result", i)
			}
		}
		if len(snaps) == 0 {
			t.Fatal("no progress with store-wide counts")
		}
	})
}
