// Package lifecycle keeps storage in bounds: it records when content was
// last pulled (batched, Tracker), evicts cached content by rule retention,
// by the registry's cache quota (least recently pulled first) and on
// demand (Evictor), refuses pushes over the registry's storage quota
// (PushQuota) and reports usage against the quotas (Usages). Eviction
// removes metadata only (manifests, tags, blob links): the content is no
// longer served or counted at once, and garbage collection reclaims the
// bytes no repository links any more.
package lifecycle

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
)

// PullStore stores batches of pull times.
type PullStore interface {
	RecordPulls(ctx context.Context, pulls []metadata.Pull) error
}

// MaxPending is how many distinct pulled items a Tracker holds before it
// flushes early (a bound on its memory between flushes).
const MaxPending = 50000

type pullKey struct{ registry, repo, kind, ref string }

// Tracker records pull times without a metadata write per request: pulls
// are kept in memory (the latest time per item) and written in one
// transaction per flush. A crash loses at most the pulls since the last
// flush; a lost pull time only makes content look older to eviction.
type Tracker struct {
	store PullStore
	log   *slog.Logger
	now   func() time.Time

	mu      sync.Mutex
	pending map[pullKey]time.Time
	full    chan struct{} // signalled when pending reaches MaxPending
}

// NewTracker returns a Tracker writing to store.
func NewTracker(store PullStore, log *slog.Logger, now func() time.Time) (*Tracker, error) {
	if store == nil {
		return nil, errors.New("lifecycle: a pull store is required")
	}
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	return &Tracker{store: store, log: log, now: now, pending: map[pullKey]time.Time{}, full: make(chan struct{}, 1)}, nil
}

// Manifest records a pull of manifest d of repo, by tag when tag is set.
func (t *Tracker) Manifest(registry, repo string, d digest.Digest, tag string) {
	at := t.now()
	t.mu.Lock()
	t.put(pullKey{registry, repo, metadata.PullManifest, d.String()}, at)
	if tag != "" {
		t.put(pullKey{registry, repo, metadata.PullTag, tag}, at)
	}
	t.mu.Unlock()
}

// Blob records a pull of blob d of repo.
func (t *Tracker) Blob(registry, repo string, d digest.Digest) {
	at := t.now()
	t.mu.Lock()
	t.put(pullKey{registry, repo, metadata.PullBlob, d.String()}, at)
	t.mu.Unlock()
}

// put keeps the latest time of k; t.mu is held.
func (t *Tracker) put(k pullKey, at time.Time) {
	if old, ok := t.pending[k]; !ok || at.After(old) {
		t.pending[k] = at
	}
	if len(t.pending) >= MaxPending {
		select {
		case t.full <- struct{}{}:
		default:
		}
	}
}

// Flush writes the pending pull times in one transaction; on failure they
// are kept (merged with newer ones) for the next flush.
func (t *Tracker) Flush(ctx context.Context) error {
	t.mu.Lock()
	batch := t.pending
	t.pending = map[pullKey]time.Time{}
	t.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	pulls := make([]metadata.Pull, 0, len(batch))
	for k, at := range batch {
		pulls = append(pulls, metadata.Pull{Registry: k.registry, Repo: k.repo, Kind: k.kind, Ref: k.ref, At: at})
	}
	if err := t.store.RecordPulls(ctx, pulls); err != nil {
		t.mu.Lock()
		for k, at := range batch {
			t.put(k, at)
		}
		t.mu.Unlock()
		return err
	}
	return nil
}

// Run flushes every interval, and early when MaxPending items wait, until
// ctx ends (the server flushes once more after draining requests).
func (t *Tracker) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.full:
		}
		if err := t.Flush(ctx); err != nil {
			t.log.Warn("pull times: flush failed; retrying at the next one", "err", err)
		}
	}
}
