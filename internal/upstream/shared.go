package upstream

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// HoldStore is where the replicas of a cluster share 429 hold-backs (the
// metadata store). host is scheme://host:port.
type HoldStore interface {
	HoldUpstream(ctx context.Context, host string, until time.Time) error
	UpstreamHolds(ctx context.Context, now time.Time) (map[string]time.Time, error)
}

// sharedStoreTimeout bounds one read or write of the shared holds: a slow
// store delays a request at most this long, then the request goes out on
// what this replica knows.
const sharedStoreTimeout = 2 * time.Second

// sharedHolds reads the holds of every replica at most every `every`, on
// the request path (an idle replica reads nothing), one read at a time:
// requests that need a read while one is in flight wait for it.
type sharedHolds struct {
	store HoldStore
	every time.Duration

	mu      sync.Mutex
	readAt  time.Time     // when the last read began
	reading chan struct{} // closed when the read in flight ends; nil when none
}

// record writes a hold this replica started.
func (s *sharedHolds) record(host string, until time.Time, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), sharedStoreTimeout)
	defer cancel()
	if err := s.store.HoldUpstream(ctx, host, until); err != nil {
		log.Warn("upstream: record a 429 hold-back for the other replicas", "host", host, "until", until, "err", err)
	}
}

// syncShared applies the holds other replicas recorded, when the last read
// is older than the bound. A failed read is logged and the request goes
// out: the store being down does not stop pulls.
func (h *health) syncShared(ctx context.Context) {
	s := h.shared
	if s == nil {
		return
	}
	s.mu.Lock()
	if time.Since(s.readAt) < s.every {
		s.mu.Unlock()
		return
	}
	if wait := s.reading; wait != nil {
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
		}
		return
	}
	done := make(chan struct{})
	s.reading = done
	start := time.Now()
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.readAt, s.reading = start, nil
		s.mu.Unlock()
		close(done)
	}()
	// Not the request's context: the requests waiting for this read need
	// it even if this one's caller leaves.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sharedStoreTimeout)
	holds, err := s.store.UpstreamHolds(rctx, start)
	cancel()
	if err != nil {
		h.log.Warn("upstream: read the other replicas' 429 hold-backs", "err", err)
		return
	}
	for host, until := range holds {
		h.holdShared(host, until)
	}
}

// holdShared holds host back until until, a hold another replica recorded
// (or this one did earlier).
func (h *health) holdShared(host string, until time.Time) {
	h.mu.Lock()
	s := h.state(host)
	longer := until.After(s.until)
	if longer {
		s.until, s.rateLimited, s.reason = until, true, "429 Too Many Requests"
	}
	if until.After(s.published) {
		s.published = until // already recorded: not written back
	}
	h.mu.Unlock()
	if longer {
		h.up.WithLabelValues(host).Set(0)
		h.log.Info("upstream held back after a 429 another replica got", "host", host, "until", until)
	}
}
