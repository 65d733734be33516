package metadatatest

import (
	"context"
	"sync"
	"testing"
	"time"
)

// testLoginFailures: concurrent failures of one key are each counted once
// (every count from 1 to n handed out exactly once); a window that ended
// starts again at 1; reads see only windows that have not ended; keys are
// separate.
func testLoginFailures(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	now := time.Now().Truncate(time.Microsecond)
	const n = 8
	counts := make(chan int, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lf, err := s.AddLoginFailure(ctx, "registry/ip:10.0.0.1", time.Minute, now)
			if err != nil {
				t.Error(err)
				return
			}
			if !lf.Until.Equal(now.Add(time.Minute)) {
				t.Errorf("window ends %v, want %v", lf.Until, now.Add(time.Minute))
			}
			counts <- lf.N
		}()
	}
	wg.Wait()
	close(counts)
	seen := map[int]bool{}
	for c := range counts {
		if c < 1 || c > n || seen[c] {
			t.Fatalf("count %d handed out twice or out of range (seen %v)", c, seen)
		}
		seen[c] = true
	}
	if lf, err := s.AddLoginFailure(ctx, "registry/id:default/bob", time.Minute, now.Add(time.Second)); err != nil || lf.N != 1 {
		t.Fatalf("another key: %+v %v", lf, err)
	}
	got, err := s.GetLoginFailures(ctx, []string{"registry/ip:10.0.0.1", "registry/id:default/bob", "registry/ip:10.9.9.9"}, now.Add(30*time.Second))
	if err != nil || len(got) != 2 || got["registry/ip:10.0.0.1"].N != n || got["registry/id:default/bob"].N != 1 ||
		!got["registry/id:default/bob"].Until.Equal(now.Add(61*time.Second)) {
		t.Fatalf("read: %+v %v", got, err)
	}
	// After the window: not read, and the next failure starts a new one.
	later := now.Add(time.Minute)
	if got, _ := s.GetLoginFailures(ctx, []string{"registry/ip:10.0.0.1"}, later); len(got) != 0 {
		t.Fatalf("an ended window was read: %+v", got)
	}
	if lf, err := s.AddLoginFailure(ctx, "registry/ip:10.0.0.1", time.Minute, later); err != nil || lf.N != 1 || !lf.Until.Equal(later.Add(time.Minute)) {
		t.Fatalf("after the window: %+v %v", lf, err)
	}
	if got, _ := s.GetLoginFailures(ctx, nil, now); len(got) != 0 {
		t.Fatalf("no keys: %+v", got)
	}
}
