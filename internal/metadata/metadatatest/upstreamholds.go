package metadatatest

import (
	"context"
	"testing"
	"time"
)

// testUpstreamHolds: a hold is seen until it ends; a later end replaces an
// earlier one, an earlier never shortens it; holds are per host.
func testUpstreamHolds(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	now := time.Now().Truncate(time.Microsecond)
	if h, err := s.UpstreamHolds(ctx, now); err != nil || len(h) != 0 {
		t.Fatalf("empty: %v %v", h, err)
	}
	const a, b = "https://registry-1.docker.io:443", "http://127.0.0.1:5000"
	for _, hold := range []struct {
		host  string
		until time.Time
	}{
		{a, now.Add(time.Minute)},
		{a, now.Add(30 * time.Second)}, // a late, shorter one (another replica's)
		{b, now.Add(time.Second)},
		{b, now.Add(2 * time.Second)},
	} {
		if err := s.HoldUpstream(ctx, hold.host, hold.until); err != nil {
			t.Fatal(err)
		}
	}
	h, err := s.UpstreamHolds(ctx, now)
	if err != nil || len(h) != 2 || !h[a].Equal(now.Add(time.Minute)) || !h[b].Equal(now.Add(2*time.Second)) {
		t.Fatalf("holds %v %v", h, err)
	}
	if h, err := s.UpstreamHolds(ctx, now.Add(10*time.Second)); err != nil || len(h) != 1 || h[b] != (time.Time{}) {
		t.Fatalf("after b's end: %v %v", h, err)
	}
	if err := s.HoldUpstream(ctx, a, now.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.UpstreamHolds(ctx, now); !h[a].Equal(now.Add(time.Minute)) {
		t.Fatalf("a past end shortened a hold: %v", h)
	}
	// Holds that ended are removed with the next hold recorded.
	const c = "https://ghcr.io:443"
	if err := s.HoldUpstream(ctx, c, time.Now().Add(20*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if err := s.HoldUpstream(ctx, b, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.UpstreamHolds(ctx, time.Time{}); len(h) != 2 || !h[c].IsZero() {
		t.Fatalf("all rows after an ended hold: %v", h)
	}
}
