package auth

import (
	"sync"
	"time"
)

// Throttle limits failed authentication attempts per key (a source address
// or an identity): after Max failures within Window, further attempts are
// refused until the window ends, without checking the secret. It is
// process-local: each replica throttles on its own.
type Throttle struct {
	max    int
	window time.Duration
	now    func() time.Time

	mu sync.Mutex
	m  map[string]*failures
}

type failures struct {
	n     int
	start time.Time
}

// maxThrottleKeys bounds memory under a flood of distinct keys; when full,
// expired entries are dropped, then (if still full) the whole map.
const maxThrottleKeys = 100_000

// NewThrottle returns a Throttle allowing max failures per window.
func NewThrottle(max int, window time.Duration, now func() time.Time) *Throttle {
	if now == nil {
		now = time.Now
	}
	return &Throttle{max: max, window: window, now: now, m: map[string]*failures{}}
}

// Blocked reports whether key is over its budget, and until when.
func (t *Throttle) Blocked(key string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f, ok := t.m[key]
	if !ok {
		return time.Time{}, false
	}
	end := f.start.Add(t.window)
	if !t.now().Before(end) {
		delete(t.m, key)
		return time.Time{}, false
	}
	return end, f.n >= t.max
}

// Fail records a failed attempt for key.
func (t *Throttle) Fail(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	f, ok := t.m[key]
	if !ok || !now.Before(f.start.Add(t.window)) {
		if len(t.m) >= maxThrottleKeys {
			t.prune(now)
		}
		f = &failures{start: now}
		t.m[key] = f
	}
	f.n++
}

func (t *Throttle) prune(now time.Time) {
	for k, f := range t.m {
		if !now.Before(f.start.Add(t.window)) {
			delete(t.m, k)
		}
	}
	if len(t.m) >= maxThrottleKeys {
		t.m = map[string]*failures{}
	}
}
