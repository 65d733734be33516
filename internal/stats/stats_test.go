package stats

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/arcacache/arca/internal/metadata"
)

// failingOnce is the real store whose next AddStats fails.
type failingOnce struct {
	metadata.Store
	fail bool
}

func (f *failingOnce) AddStats(ctx context.Context, rows []metadata.StatRow) error {
	if f.fail {
		f.fail = false
		return errors.New("disk on fire")
	}
	return f.Store.AddStats(ctx, rows)
}

func sums(t *testing.T, r *Recorder, reg string, since time.Time) map[string]int64 {
	t.Helper()
	rows, err := r.Series(context.Background(), reg, since)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, row := range rows {
		out[row.Rule+"/"+row.Name] += row.Value
	}
	return out
}

func TestRecorderCountsFlushesAndAgreesWithPrometheus(t *testing.T) {
	ctx := context.Background()
	db, err := metadata.OpenSQLite(ctx, filepath.Join(t.TempDir(), "arca.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := &failingOnce{Store: db}
	now := time.Date(2026, 12, 1, 12, 3, 0, 0, time.UTC)
	preg := prometheus.NewRegistry()
	r, err := New(store, preg, nil, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	since := now.Add(-time.Hour)

	r.Served("default", "app", "manifest", "miss", 500)
	r.Served("default", "app", "blob", "miss", 1000)
	r.Served("default", "app", "blob", "coalesced", 1000) // shares the miss's fetch: no bytes
	r.Served("default", "app", "blob", "hit", 1000)
	r.Served("other", "app", "blob", "hit", 7)
	want := map[string]int64{"app/miss": 2, "app/coalesced": 1, "app/hit": 1, "app/bytes_upstream": 1500, "app/bytes_cache": 1000}
	check := func(when string) {
		t.Helper()
		got := sums(t, r, "default", since)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: %s = %d, want %d (all: %v)", when, k, got[k], v, got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("%s: counters %v, want exactly %v", when, got, want)
		}
	}
	check("before a flush")

	store.fail = true
	if err := r.Flush(ctx); err == nil {
		t.Fatal("flush into a failing store: no error")
	}
	check("after a failed flush (counts kept)")
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("after a flush")
	if err := r.Flush(ctx); err != nil { // nothing pending: nothing added twice
		t.Fatal(err)
	}
	check("after a second flush")

	// Same bucket again: the stored counter grows.
	r.Served("default", "app", "blob", "hit", 24)
	want["app/hit"], want["app/bytes_cache"] = 2, 1024
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("after adding to a stored bucket")

	if v := testutil.ToFloat64(r.requests.WithLabelValues("default", "app", "blob", "hit")); v != 2 {
		t.Errorf("arca_cache_rule_requests_total hit = %v, want 2", v)
	}
	if v := testutil.ToFloat64(r.bytes.WithLabelValues("default", "app", "cache")); v != 1024 {
		t.Errorf("arca_cache_rule_bytes_total cache = %v, want 1024", v)
	}
	if v := testutil.ToFloat64(r.bytes.WithLabelValues("default", "app", "upstream")); v != 1500 {
		t.Errorf("arca_cache_rule_bytes_total upstream = %v, want 1500", v)
	}

	// A later window leaves the buckets out; pruning deletes them.
	if got := sums(t, r, "default", now.Add(time.Hour)); len(got) != 0 {
		t.Errorf("window after the counts: %v", got)
	}
	if err := db.PruneStats(ctx, now.Add(Bucket)); err != nil {
		t.Fatal(err)
	}
	if got := sums(t, r, "default", since); len(got) != 0 {
		t.Errorf("after pruning: %v", got)
	}
}

// Active-sync runs are counted per rule and result, in the buckets (kept
// across a flush) and in arca_sync_rule_runs_total.
func TestRecorderCountsSyncRuns(t *testing.T) {
	ctx := context.Background()
	db, err := metadata.OpenSQLite(ctx, filepath.Join(t.TempDir(), "arca.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 1, 12, 3, 0, 0, time.UTC)
	r, err := New(db, prometheus.NewRegistry(), nil, func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	r.SyncRun("default", "app", "Succeeded")
	r.SyncRun("default", "app", "Failed")
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	now = now.Add(Bucket) // a later bucket, not flushed yet
	r.SyncRun("default", "app", "Succeeded")
	r.SyncRun("default", "other", "Deferred")
	got := sums(t, r, "default", now.Add(-time.Hour))
	want := map[string]int64{"app/sync_succeeded": 2, "app/sync_failed": 1, "other/sync_deferred": 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("counters %v, want exactly %v", got, want)
	}
	if v := testutil.ToFloat64(r.syncRuns.WithLabelValues("default", "app", "Succeeded")); v != 2 {
		t.Errorf("arca_sync_rule_runs_total app Succeeded = %v, want 2", v)
	}
}
