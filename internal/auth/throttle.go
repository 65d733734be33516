package auth

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/arcacache/arca/internal/metadata"
)

// Throttle limits failed authentication attempts per key (a source address
// or an identity): after Max failures within Window, further attempts are
// refused until the window ends, without checking the secret.
//
// Shared (Share), the counts are the cluster's: every failure is counted
// in the store, which hands back the cluster-wide count, and Check reads
// the counts of its keys before a secret is checked, so failures spread
// over replicas hit the limit at the same count as on one. A successful
// attempt writes nothing. Blocked answers from this replica's view only
// (the counts it wrote or read), for checks on every request.
type Throttle struct {
	max    int
	window time.Duration
	now    func() time.Time

	shared FailureStore
	scope  string
	log    *slog.Logger

	mu sync.Mutex
	m  map[string]*failures
}

// FailureStore keeps failed-attempt counts where every replica sees them
// (the metadata store).
type FailureStore interface {
	AddLoginFailure(ctx context.Context, key string, window time.Duration, now time.Time) (metadata.LoginFailures, error)
	GetLoginFailures(ctx context.Context, keys []string, now time.Time) (map[string]metadata.LoginFailures, error)
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

// Share counts failures in store, under scope (throttles of different
// purposes keep separate counts for the same address). Call it before
// the throttle is used.
func (t *Throttle) Share(store FailureStore, scope string, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	t.shared, t.scope, t.log = store, scope, log
}

// Blocked reports whether key is over its budget, and until when, as far
// as this replica knows.
func (t *Throttle) Blocked(key string) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.blocked(key)
}

// blocked must be called with t.mu held.
func (t *Throttle) blocked(key string) (time.Time, bool) {
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

// Check reports whether any of keys is over its budget, and until when:
// when shared, by the cluster's counts (one read of the store; if it
// fails, this replica's view decides).
func (t *Throttle) Check(ctx context.Context, keys ...string) (time.Time, bool) {
	if t.shared != nil {
		now := t.now()
		got, err := t.shared.GetLoginFailures(ctx, t.storeKeys(keys), now)
		if err != nil {
			t.log.WarnContext(ctx, "failed-login throttle: read the shared counts; using this replica's", "err", err)
		} else {
			t.mu.Lock()
			for _, k := range keys {
				if lf, ok := got[t.scope+"/"+k]; ok {
					t.set(k, lf, now)
				} else {
					delete(t.m, k)
				}
			}
			t.mu.Unlock()
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range keys {
		if until, blocked := t.blocked(k); blocked {
			return until, true
		}
	}
	return time.Time{}, false
}

func (t *Throttle) storeKeys(keys []string) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = t.scope + "/" + k
	}
	return out
}

// Fail records a failed attempt for each of keys.
func (t *Throttle) Fail(ctx context.Context, keys ...string) {
	for _, k := range keys {
		if t.shared != nil {
			now := t.now()
			lf, err := t.shared.AddLoginFailure(ctx, t.scope+"/"+k, t.window, now)
			if err == nil {
				t.mu.Lock()
				t.set(k, lf, now)
				t.mu.Unlock()
				continue
			}
			t.log.WarnContext(ctx, "failed-login throttle: count in the shared store; counting here only", "err", err)
		}
		t.failLocal(k)
	}
}

// set makes the cluster's count of key this replica's view. Must be
// called with t.mu held.
func (t *Throttle) set(key string, lf metadata.LoginFailures, now time.Time) {
	if len(t.m) >= maxThrottleKeys {
		t.prune(now)
	}
	t.m[key] = &failures{n: lf.N, start: lf.Until.Add(-t.window)}
}

func (t *Throttle) failLocal(key string) {
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
