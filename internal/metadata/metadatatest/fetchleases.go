package metadatatest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testFetchLeases: one holder per fetch key (of many contenders), renewal
// by the holder, the holder's lease (and address) shown to the others,
// takeover after expiry, release only by the holder.
func testFetchLeases(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h := string(rune('a' + i))
			cur, got, err := s.AcquireFetchLease(context.Background(), "k1", h, "http://"+h, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			if got {
				wins.Add(1)
			}
			if got != (cur.Holder == h) || cur.Addr != "http://"+cur.Holder || time.Until(cur.Expires) < 50*time.Second {
				t.Errorf("%s: got %v, lease %+v", h, got, cur)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d holders of one fetch lease", wins.Load())
	}
	cur, _, _ := s.AcquireFetchLease(ctx, "k1", "other", "http://other", time.Minute)
	holder := cur.Holder

	if _, got, err := s.AcquireFetchLease(ctx, "k1", holder, "http://"+holder, 50*time.Millisecond); err != nil || !got {
		t.Fatalf("renewal by the holder: %v, %v", got, err)
	}
	if _, got, _ := s.AcquireFetchLease(ctx, "k2", "z", "", time.Minute); !got {
		t.Fatal("leases are per key")
	}
	time.Sleep(80 * time.Millisecond)
	if cur, got, _ := s.AcquireFetchLease(ctx, "k1", "z", "", time.Minute); !got || cur.Holder != "z" {
		t.Fatalf("an expired lease was not taken over: %v %+v", got, cur)
	}
	if err := s.ReleaseFetchLease(ctx, "k1", holder); err != nil {
		t.Fatal(err)
	}
	if cur, got, _ := s.AcquireFetchLease(ctx, "k1", holder, "", time.Minute); got || cur.Holder != "z" {
		t.Fatalf("a release by a former holder freed z's lease: %v %+v", got, cur)
	}
	if err := s.ReleaseFetchLease(ctx, "k1", "z"); err != nil {
		t.Fatal(err)
	}
	if _, got, _ := s.AcquireFetchLease(ctx, "k1", holder, "", time.Minute); !got {
		t.Fatal("a released lease was not free")
	}
}
