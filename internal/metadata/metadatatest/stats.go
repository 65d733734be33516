package metadatatest

import (
	"context"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/metadata"
)

// testRuleStats: deltas add up per bucket, the window and registry select,
// pruning deletes old buckets.
func testRuleStats(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	b0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	b1 := b0.Add(5 * time.Minute)
	add := func(rows ...metadata.StatRow) {
		t.Helper()
		if err := s.AddStats(ctx, rows); err != nil {
			t.Fatal(err)
		}
	}
	add(metadata.StatRow{Bucket: b0, Registry: "default", Rule: "app", Name: "hit", Value: 2},
		metadata.StatRow{Bucket: b1, Registry: "default", Rule: "app", Name: "hit", Value: 1},
		metadata.StatRow{Bucket: b1, Registry: "other", Rule: "app", Name: "hit", Value: 9})
	add(metadata.StatRow{Bucket: b0, Registry: "default", Rule: "app", Name: "hit", Value: 3}) // a second flush
	sum := func(since time.Time) (map[time.Time]int64, int) {
		t.Helper()
		rows, err := s.ListStats(ctx, "default", since)
		if err != nil {
			t.Fatal(err)
		}
		out := map[time.Time]int64{}
		for _, r := range rows {
			out[r.Bucket] += r.Value
		}
		return out, len(rows)
	}
	if got, n := sum(b0); n != 2 || got[b0] != 5 || got[b1] != 1 {
		t.Errorf("since b0: %v (%d rows), want b0=5 b1=1", got, n)
	}
	if got, n := sum(b1); n != 1 || got[b1] != 1 {
		t.Errorf("since b1: %v (%d rows), want b1=1", got, n)
	}
	if err := s.PruneStats(ctx, b1); err != nil {
		t.Fatal(err)
	}
	if got, n := sum(b0); n != 1 || got[b1] != 1 {
		t.Errorf("after pruning before b1: %v (%d rows)", got, n)
	}
}
