package syncer

import (
	"context"
	"strings"
	"sync"
	"time"
)

// limiter bounds concurrent upstream requests per upstream host and holds
// every request to a host back while the host asked us to wait (429).
type limiter struct {
	n      int
	mu     sync.Mutex
	sems   map[string]chan struct{}
	paused map[string]time.Time
}

func newLimiter(n int) *limiter {
	return &limiter{n: n, sems: map[string]chan struct{}{}, paused: map[string]time.Time{}}
}

// acquire waits for a slot for host; release it with the returned func.
func (l *limiter) acquire(ctx context.Context, host string) (func(), error) {
	host = strings.ToLower(host)
	l.mu.Lock()
	sem := l.sems[host]
	if sem == nil {
		sem = make(chan struct{}, l.n)
		l.sems[host] = sem
	}
	until := l.paused[host]
	l.mu.Unlock()
	if wait := time.Until(until); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// pause holds requests to host back until t.
func (l *limiter) pause(host string, t time.Time) {
	host = strings.ToLower(host)
	l.mu.Lock()
	if t.After(l.paused[host]) {
		l.paused[host] = t
	}
	l.mu.Unlock()
}
