package lifecycle_test

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/lifecycle"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

func openStore(t *testing.T) metadata.Store {
	t.Helper()
	s, err := metadata.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "m.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.SyncRegistries(context.Background(), []metadata.RegistryRecord{{Name: "reg01"}}); err != nil {
		t.Fatal(err)
	}
	return s
}

// image stores a manifest of size 10 with one layer of layer bytes in repo.
func image(t *testing.T, s metadata.Store, repo, tag string, layer int64) digest.Digest {
	t.Helper()
	ctx := context.Background()
	l := digest.FromString(repo + tag + "layer")
	if err := s.LinkBlob(ctx, "reg01", repo, l, layer); err != nil {
		t.Fatal(err)
	}
	m := metadata.Manifest{Registry: "reg01", Repo: repo, Digest: digest.FromString(repo + tag), MediaType: "mt", Size: 10,
		Refs: []metadata.Ref{{Digest: l, Kind: metadata.RefBlob}}}
	if err := s.PutManifest(ctx, m, tag); err != nil {
		t.Fatal(err)
	}
	return m.Digest
}

func putRules(t *testing.T, s metadata.Store, rs ...rules.Rule) {
	t.Helper()
	err := s.UpdateRules(context.Background(), "reg01", func(tx metadata.RulesTx) error {
		for _, r := range rs {
			r.ProvisioningState, r.CreatedAt, r.ModifiedAt = rules.StateSucceeded, time.Now(), time.Now()
			if err := tx.PutCacheRule(r); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func has(t *testing.T, s metadata.Store, repo string, d digest.Digest) bool {
	t.Helper()
	_, err := s.GetManifest(context.Background(), "reg01", repo, d)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		t.Fatal(err)
	}
	return err == nil
}

func newEvictor(t *testing.T, s metadata.Store, now func() time.Time) *lifecycle.Evictor {
	t.Helper()
	e, err := lifecycle.NewEvictor(s, prometheus.NewRegistry(), nil, "test-holder", now)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// The tracker writes pulls only when it flushes, one time per item (the
// latest), and keeps a batch that failed to write for the next flush.
func TestTrackerBatches(t *testing.T) {
	s := &countingStore{}
	clock := time.Unix(1_700_000_000, 0)
	tr, err := lifecycle.NewTracker(s, nil, func() time.Time { clock = clock.Add(time.Second); return clock })
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("m")
	for range 100 {
		tr.Manifest("reg01", "app", d, "v1")
		tr.Blob("reg01", "app", d)
	}
	if s.calls != 0 {
		t.Fatalf("%d writes before a flush", s.calls)
	}
	s.fail = true
	if err := tr.Flush(context.Background()); err == nil {
		t.Fatal("failed flush reported no error")
	}
	s.fail = false
	if err := tr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if s.calls != 2 || len(s.last) != 3 {
		t.Fatalf("%d writes, last of %d pulls; want 2 writes (one failed), 3 pulls (manifest, tag, blob)", s.calls, len(s.last))
	}
	// The last Manifest call ticked once before the last Blob call.
	want := map[string]time.Time{metadata.PullManifest: clock.Add(-time.Second), metadata.PullTag: clock.Add(-time.Second), metadata.PullBlob: clock}
	for _, p := range s.last {
		if !p.At.Equal(want[p.Kind]) {
			t.Errorf("%s %s pulled at %v, want the latest %v", p.Kind, p.Ref, p.At, want[p.Kind])
		}
	}
	if err := tr.Flush(context.Background()); err != nil || s.calls != 2 {
		t.Fatalf("an empty flush wrote (%d writes, %v)", s.calls, err)
	}
}

type countingStore struct {
	mu    sync.Mutex
	calls int
	fail  bool
	last  []metadata.Pull
}

func (c *countingStore) RecordPulls(_ context.Context, p []metadata.Pull) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.fail {
		return errors.New("store down")
	}
	c.last = p
	return nil
}

// Retention evicts a rule's content not pulled for its retentionDays;
// rules without retention and pushed repositories keep theirs, and a rule
// in ActiveSync keeps what its sync tracks (not what clients pulled
// through besides, nor what its filters exclude).
func TestRetention(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	putRules(t, s,
		rules.Rule{Name: "short", Source: "up.example/short/*", Target: "short/*", RetentionDays: 7},
		rules.Rule{Name: "long", Source: "up.example/long/*", Target: "long/*", RetentionDays: 30},
		rules.Rule{Name: "synced", Source: "up.example/synced/*", Target: "synced/*", RetentionDays: 7, SyncMode: rules.ActiveSync},
		rules.Rule{Name: "forever", Source: "up.example/forever/*", Target: "forever/*"})
	short := image(t, s, "short/app", "v1", 100)
	shortPulled := image(t, s, "short/app", "v2", 100)
	long := image(t, s, "long/app", "v1", 100)
	synced := image(t, s, "synced/app", "v1", 100)
	syncedFailed := image(t, s, "synced/app", "v2", 100)
	untracked := image(t, s, "synced/app", "pulled", 100)
	excluded := image(t, s, "synced/app", "excluded", 100)
	for _, st := range []metadata.SyncTag{
		{Registry: "reg01", Rule: "synced", Repo: "synced/app", Tag: "v1", Digest: synced.String(), State: "done"},
		{Registry: "reg01", Rule: "synced", Repo: "synced/app", Tag: "v2", Digest: syncedFailed.String(), State: "failed", Error: "upstream down"},
		{Registry: "reg01", Rule: "synced", Repo: "synced/app", Tag: "excluded", Digest: excluded.String(), State: "excluded"},
	} {
		if err := s.PutSyncTag(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	forever := image(t, s, "forever/app", "v1", 100)
	mine := image(t, s, "mine", "v1", 100)
	if err := s.MarkPushed(ctx, "reg01", "mine"); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(10 * 24 * time.Hour)
	if err := s.RecordPulls(ctx, []metadata.Pull{{Registry: "reg01", Repo: "short/app", Kind: metadata.PullManifest, Ref: shortPulled.String(), At: later.Add(-24 * time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	e := newEvictor(t, s, func() time.Time { return later })
	res, err := e.Retention(ctx, "reg01")
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifests != 3 || res.Bytes != 330 {
		t.Fatalf("retention evicted %d manifests, %d bytes; want 3, 330", res.Manifests, res.Bytes)
	}
	for _, c := range []struct {
		repo string
		d    digest.Digest
		want bool
	}{{"short/app", short, false}, {"short/app", shortPulled, true}, {"long/app", long, true},
		{"synced/app", synced, true}, {"synced/app", syncedFailed, true}, {"synced/app", untracked, false}, {"synced/app", excluded, false},
		{"forever/app", forever, true}, {"mine", mine, true}} {
		if got := has(t, s, c.repo, c.d); got != c.want {
			t.Errorf("%s@%s present %v, want %v", c.repo, c.d, got, c.want)
		}
	}
}

// Over the cache quota, the least recently pulled cached content goes
// first, only until usage is within the quota; pushed content never.
func TestQuotaEvictsLeastRecentlyPulled(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	putRules(t, s, rules.Rule{Name: "all", Source: "up.example/lib/*", Target: "lib/*"})
	a := image(t, s, "lib/a", "v1", 1000)
	b := image(t, s, "lib/b", "v1", 1000)
	c := image(t, s, "lib/c", "v1", 1000)
	mine := image(t, s, "mine", "v1", 5000)
	if err := s.MarkPushed(ctx, "reg01", "mine"); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	pull := func(repo string, d digest.Digest, after time.Duration) metadata.Pull {
		return metadata.Pull{Registry: "reg01", Repo: repo, Kind: metadata.PullManifest, Ref: d.String(), At: now.Add(after)}
	}
	// b least recently pulled, a most recently.
	pulls := []metadata.Pull{pull("lib/b", b, time.Minute), pull("lib/c", c, 2*time.Minute), pull("lib/a", a, 3*time.Minute)}
	if err := s.RecordPulls(ctx, pulls); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRegistrySettings(ctx, "reg01", func(a *metadata.RegistrySettings) error { a.CacheQuota = 2020; return nil }); err != nil {
		t.Fatal(err)
	}
	e := newEvictor(t, s, func() time.Time { return now.Add(time.Hour) })
	res, err := e.Quota(ctx, "reg01")
	if err != nil {
		t.Fatal(err)
	}
	if res.Manifests != 1 || has(t, s, "lib/b", b) || !has(t, s, "lib/c", c) || !has(t, s, "lib/a", a) || !has(t, s, "mine", mine) {
		t.Fatalf("quota evicted %+v; want lib/b only (least recently pulled)", res)
	}
	us, _ := s.RegistryUsage(ctx, "reg01")
	if cached, pushed := lifecycle.CachedBytes(us); cached != 2020 || pushed != 5010 {
		t.Fatalf("cached %d, pushed %d after eviction; want 2020, 5010", cached, pushed)
	}
	// A quota below what pushed content alone needs evicts all cached
	// content and nothing pushed.
	if err := s.UpdateRegistrySettings(ctx, "reg01", func(a *metadata.RegistrySettings) error { a.CacheQuota = 1; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Quota(ctx, "reg01"); err != nil {
		t.Fatal(err)
	}
	if has(t, s, "lib/a", a) || has(t, s, "lib/c", c) || !has(t, s, "mine", mine) {
		t.Fatal("a tiny quota must evict every cached image and keep the pushed one")
	}
}

// Purge takes one rule's content (dry: reports it and changes nothing).
func TestPurge(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	putRules(t, s, rules.Rule{Name: "one", Source: "up.example/one/*", Target: "one/*"},
		rules.Rule{Name: "two", Source: "up.example/two/*", Target: "two/*"})
	one := image(t, s, "one/app", "v1", 100)
	two := image(t, s, "two/app", "v1", 100)
	e := newEvictor(t, s, nil)
	res, err := e.Purge(ctx, "reg01", "ONE", 0, true)
	if err != nil || res.Manifests != 1 || res.Bytes != 110 || !res.DryRun || !has(t, s, "one/app", one) {
		t.Fatalf("dry purge: %+v, %v", res, err)
	}
	if res, err := e.Purge(ctx, "reg01", "one", 24*time.Hour, false); err != nil || res.Manifests != 0 {
		t.Fatalf("purge of content older than a day took %+v (%v); it was stored just now", res, err)
	}
	if res, err := e.Purge(ctx, "reg01", "one", 0, false); err != nil || res.Manifests != 1 || has(t, s, "one/app", one) || !has(t, s, "two/app", two) {
		t.Fatalf("purge: %+v, %v", res, err)
	}
}

// Pushes over the storage quota are refused with DENIED; an unknown size
// only once the quota is reached; bytes pushed since the last read count.
func TestPushQuota(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	image(t, s, "mine", "v1", 990) // 1000 bytes
	if err := s.MarkPushed(ctx, "reg01", "mine"); err != nil {
		t.Fatal(err)
	}
	image(t, s, "cached", "v1", 100000) // cached content does not count
	q, err := lifecycle.NewPushQuota(s, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Check(ctx, "reg01", 1<<40); err != nil {
		t.Fatalf("no quota: %v", err)
	}
	if err := s.UpdateRegistrySettings(ctx, "reg01", func(a *metadata.RegistrySettings) error { a.StorageQuota = 1500; return nil }); err != nil {
		t.Fatal(err)
	}
	q.Invalidate("reg01")
	for _, c := range []struct {
		n    int64
		deny bool
	}{{500, false}, {501, true}, {-1, false}} {
		err := q.Check(ctx, "reg01", c.n)
		if denied := errcode.Status(err) == http.StatusForbidden; denied != c.deny || (err != nil && !c.deny) {
			t.Errorf("Check(%d) = %v, want denied %v", c.n, err, c.deny)
		}
		if err != nil && !strings.Contains(err.Error(), "storage quota") {
			t.Errorf("refusal %q does not say why", err)
		}
	}
	q.Added("reg01", 500)
	if err := q.Check(ctx, "reg01", -1); errcode.Status(err) != http.StatusForbidden {
		t.Errorf("at the quota, a push of unknown size: %v, want DENIED", err)
	}
	if err := q.Check(ctx, "reg01", 0); err != nil {
		t.Errorf("at the quota, nothing more: %v", err)
	}
}

// One replica at a time: while another holder has a registry's eviction
// lease, RunOnce leaves the registry alone; once it is free, it evicts.
func TestRunOnceTakesTheLease(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	putRules(t, s, rules.Rule{Name: "all", Source: "up.example/lib/*", Target: "lib/*"})
	d := image(t, s, "lib/a", "v1", 1000)
	if err := s.UpdateRegistrySettings(ctx, "reg01", func(a *metadata.RegistrySettings) error { a.CacheQuota = 1; return nil }); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcquireSyncLease(ctx, "reg01", "$eviction", "other-replica", time.Hour); err != nil || !ok {
		t.Fatalf("lease: %v %v", ok, err)
	}
	e := newEvictor(t, s, nil)
	e.RunOnce(ctx, []string{"reg01"}, time.Minute)
	if !has(t, s, "lib/a", d) {
		t.Fatal("evicted while another replica held the lease")
	}
	if err := s.ReleaseSyncLease(ctx, "reg01", "$eviction", "other-replica"); err != nil {
		t.Fatal(err)
	}
	e.RunOnce(ctx, []string{"reg01"}, time.Minute)
	if has(t, s, "lib/a", d) {
		t.Fatal("not evicted once the lease was free")
	}
	// It gave the lease back.
	if ok, err := s.AcquireSyncLease(ctx, "reg01", "$eviction", "other-replica", time.Hour); err != nil || !ok {
		t.Fatalf("lease after the pass: %v %v", ok, err)
	}
}
