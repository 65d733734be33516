package metadata

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/rules"
)

func TestSyncLease(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	steps := []struct {
		what   string
		holder string
		ttl    time.Duration
		want   bool
	}{
		{"first taker", "a", time.Minute, true},
		{"other holder while held", "b", time.Minute, false},
		{"renewal by the holder", "a", 50 * time.Millisecond, true},
		{"still held before expiry", "b", time.Minute, false},
	}
	for _, st := range steps {
		got, err := s.AcquireSyncLease(ctx, "Default", "Rule-One", st.holder, st.ttl)
		if err != nil || got != st.want {
			t.Fatalf("%s: got %v, %v; want %v", st.what, got, err, st.want)
		}
	}
	time.Sleep(80 * time.Millisecond)
	if got, _ := s.AcquireSyncLease(ctx, "default", "rule-one", "b", time.Minute); !got {
		t.Fatal("an expired lease was not taken over (registry and rule names ignore case)")
	}
	if err := s.ReleaseSyncLease(ctx, "default", "rule-one", "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.AcquireSyncLease(ctx, "default", "rule-one", "a", time.Minute); got {
		t.Fatal("a release by a former holder freed b's lease")
	}
	if err := s.ReleaseSyncLease(ctx, "default", "rule-one", "b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.AcquireSyncLease(ctx, "default", "rule-one", "a", time.Minute); !got {
		t.Fatal("a released lease was not free")
	}
	if got, _ := s.AcquireSyncLease(ctx, "default", "rule-two", "b", time.Minute); !got {
		t.Fatal("leases are per rule")
	}
}

func TestSyncLeaseHasOneWinner(t *testing.T) {
	s := openTest(t)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.AcquireSyncLease(context.Background(), "default", "contended", string(rune('a'+i)), time.Minute)
			if err != nil {
				t.Error(err)
			}
			if got {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d holders of one lease", wins.Load())
	}
}

func TestSyncRunsAndTags(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	if _, err := s.GetSyncRun(ctx, "default", "r1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing run: %v", err)
	}
	start := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	run := SyncRun{Registry: "default", Rule: "R1", RunID: "x", Result: "Running", StartedAt: start, ConfigHash: "h"}
	if err := s.PutSyncRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	run.Result, run.EndedAt, run.TagsSynced, run.BytesFetched, run.Error = "Failed", start.Add(time.Minute), 3, 1<<40, "boom"
	if err := s.PutSyncRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSyncRun(ctx, "DEFAULT", "r1")
	if err != nil || got.Result != "Failed" || !got.StartedAt.Equal(start) || !got.EndedAt.Equal(start.Add(time.Minute)) ||
		got.TagsSynced != 3 || got.BytesFetched != 1<<40 || got.Error != "boom" || !got.NextAt.IsZero() {
		t.Fatalf("run: %+v %v", got, err)
	}

	for _, st := range []SyncTag{
		{Registry: "default", Rule: "r1", Repo: "app", Tag: "v1", Digest: "sha256:1", State: "done", ConfigHash: "h"},
		{Registry: "default", Rule: "r1", Repo: "app", Tag: "v2", Digest: "sha256:2", State: "failed", Error: "upstream 500", ConfigHash: "h"},
		{Registry: "default", Rule: "r2", Repo: "app", Tag: "v3", State: "failed", Error: "other rule"},
	} {
		if err := s.PutSyncTag(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.GetSyncTag(ctx, "default", "R1", "app", "v1")
	if err != nil || st.State != "done" || st.Digest != "sha256:1" || st.ConfigHash != "h" {
		t.Fatalf("tag: %+v %v", st, err)
	}
	errs, err := s.SyncTagErrors(ctx, "default", "r1", 10)
	if err != nil || len(errs) != 1 || errs[0].Tag != "v2" || errs[0].Error != "upstream 500" {
		t.Fatalf("tag errors: %+v %v", errs, err)
	}
	// A later success clears the error.
	if err := s.PutSyncTag(ctx, SyncTag{Registry: "default", Rule: "r1", Repo: "app", Tag: "v2", Digest: "sha256:2", State: "done"}); err != nil {
		t.Fatal(err)
	}
	if errs, _ := s.SyncTagErrors(ctx, "default", "r1", 10); len(errs) != 0 {
		t.Fatalf("tag errors after success: %+v", errs)
	}
}

func TestActiveSyncRules(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for _, reg := range []string{"one", "two"} {
		err := s.UpdateRules(ctx, reg, func(tx *RulesTx) error {
			for _, r := range []rules.Rule{
				{Name: "active-rule", Source: "quay.io/a", Target: "a", SyncMode: rules.ActiveSync},
				{Name: "passive-rule", Source: "quay.io/b", Target: "b", SyncMode: rules.PassiveSync},
				{Name: "default-rule", Source: "quay.io/c", Target: "c"},
			} {
				r.ProvisioningState = rules.StateSucceeded
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
	refs, err := s.ActiveSyncRules(ctx)
	if err != nil || len(refs) != 2 || refs[0] != (RuleRef{"one", "active-rule"}) || refs[1] != (RuleRef{"two", "active-rule"}) {
		t.Fatalf("active rules: %+v %v", refs, err)
	}
}
