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

// testSettleFetchLease: a settled lease shows the holder's outcome (and no
// address) to the others until it lapses, is not taken before, is settled
// only by its holder, and a new fetch under it starts with no outcome.
func testSettleFetchLease(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if _, got, err := s.AcquireFetchLease(ctx, "k", "a", "http://a", time.Minute); err != nil || !got {
		t.Fatalf("acquire: %v %v", got, err)
	}
	if err := s.SettleFetchLease(ctx, "k", "b", "notfound", time.Minute); err != nil {
		t.Fatal(err)
	}
	if cur, got, _ := s.AcquireFetchLease(ctx, "k", "c", "", time.Minute); got || cur.Holder != "a" || cur.Outcome != "" || cur.Addr != "http://a" {
		t.Fatalf("settled by a non-holder: %v %+v", got, cur)
	}
	if err := s.SettleFetchLease(ctx, "k", "a", "notfound", 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	cur, got, err := s.AcquireFetchLease(ctx, "k", "c", "http://c", time.Minute)
	if err != nil || got || cur.Holder != "a" || cur.Outcome != "notfound" || cur.Addr != "" || time.Until(cur.Expires) > 100*time.Millisecond {
		t.Fatalf("a settled lease, to another: %v %+v %v", got, cur, err)
	}
	if _, got, _ := s.AcquireFetchLease(ctx, "k2", "c", "", time.Minute); !got {
		t.Fatal("outcomes are per key")
	}
	time.Sleep(150 * time.Millisecond)
	if cur, got, _ := s.AcquireFetchLease(ctx, "k", "c", "http://c", time.Minute); !got || cur.Holder != "c" || cur.Outcome != "" {
		t.Fatalf("a lapsed settled lease was not taken over: %v %+v", got, cur)
	}
	if cur, _, _ := s.AcquireFetchLease(ctx, "k", "d", "", time.Minute); cur.Outcome != "" || cur.Addr != "http://c" {
		t.Fatalf("the new fetch shows an old outcome: %+v", cur)
	}
	if err := s.SettleFetchLease(ctx, "k", "c", "notfound", time.Minute); err != nil {
		t.Fatal(err)
	}
	if cur, got, _ := s.AcquireFetchLease(ctx, "k", "c", "", time.Minute); !got || cur.Outcome != "" {
		t.Fatalf("the holder's own next fetch under its settled lease: %v %+v", got, cur)
	}
	if cur, _, _ := s.AcquireFetchLease(ctx, "k", "d", "", time.Minute); cur.Outcome != "" {
		t.Fatalf("after the holder's next fetch began: %+v", cur)
	}
}
