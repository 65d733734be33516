// Package stats counts what the pull-through cache served per registry
// and rule: requests by result and bytes served from the cache or fetched
// from the upstream. Counts are Prometheus counters (since start) and,
// batched, time-bucketed rows in the metadata store (history for the
// portal's charts): a flush every interval writes one transaction.
package stats

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/metadata"
)

// Counter names (the rule_stats name column). Request counters are the
// cache results (hit, miss, coalesced, stale, error); active-sync runs are
// SyncRunPrefix and the run's result in lower case (sync_succeeded,
// sync_failed, sync_deferred, sync_interrupted).
const (
	BytesCache    = "bytes_cache"    // response bytes of hits: served from the cache
	BytesUpstream = "bytes_upstream" // response bytes of misses: fetched from the upstream
	SyncRunPrefix = "sync_"
)

// Bucket is the length of a stored time bucket; Retention how long buckets are kept.
const (
	Bucket    = 5 * time.Minute
	Retention = 8 * 24 * time.Hour
)

// Store keeps the buckets.
type Store interface {
	AddStats(ctx context.Context, rows []metadata.StatRow) error
	ListStats(ctx context.Context, registry string, since time.Time) ([]metadata.StatRow, error)
	PruneStats(ctx context.Context, before time.Time) error
}

type key struct {
	bucket               int64
	registry, rule, name string
}

// Recorder counts; it is safe for concurrent use.
type Recorder struct {
	store    Store
	log      *slog.Logger
	now      func() time.Time
	requests *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	syncRuns *prometheus.CounterVec

	mu      sync.Mutex
	pending map[key]int64 // not yet flushed
	// flushMu orders Flush and Series: a batch is either pending or
	// stored when Series looks, never neither or both.
	flushMu sync.Mutex
}

// New returns a Recorder registering its counters on reg.
func New(store Store, reg prometheus.Registerer, log *slog.Logger, now func() time.Time) (*Recorder, error) {
	if store == nil || reg == nil {
		return nil, errors.New("stats: store and registerer are required")
	}
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	r := &Recorder{store: store, log: log, now: now, pending: map[key]int64{},
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_cache_rule_requests_total",
			Help: "Requests served through a cache rule, by registry, rule, kind (manifest, blob, tags, referrers) and cache result (hit, miss, coalesced, stale, error).",
		}, []string{"registry", "rule", "kind", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_cache_rule_bytes_total",
			Help: "Response bytes served through a cache rule, by registry, rule and source (cache: hits; upstream: misses, fetched for the request).",
		}, []string{"registry", "rule", "source"}),
		syncRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_sync_rule_runs_total",
			Help: "Active-sync runs finished, by registry, rule and result (Succeeded, Failed, Deferred, Interrupted).",
		}, []string{"registry", "rule", "result"}),
	}
	for _, c := range []prometheus.Collector{r.requests, r.bytes, r.syncRuns} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// SyncRun counts one finished active-sync run of rule with its result
// (the syncer's RunRecorder).
func (r *Recorder) SyncRun(registry, rule, result string) {
	r.syncRuns.WithLabelValues(registry, rule, result).Inc()
	r.add(key{r.now().Truncate(Bucket).Unix(), registry, rule, SyncRunPrefix + strings.ToLower(result)}, 1)
}

func (r *Recorder) add(k key, n int64) {
	r.mu.Lock()
	r.pending[k] += n
	r.mu.Unlock()
}

// Served counts one response of rule: its kind, cache result and body bytes.
// Coalesced responses share a fetch another request counted, so their
// bytes count as neither source.
func (r *Recorder) Served(registry, rule, kind, result string, n int64) {
	r.requests.WithLabelValues(registry, rule, kind, result).Inc()
	src := ""
	switch result {
	case "hit", "stale":
		src = BytesCache
	case "miss":
		src = BytesUpstream
	}
	if src != "" && n > 0 {
		r.bytes.WithLabelValues(registry, rule, map[string]string{BytesCache: "cache", BytesUpstream: "upstream"}[src]).Add(float64(n))
	}
	b := r.now().Truncate(Bucket).Unix()
	r.add(key{b, registry, rule, result}, 1)
	if src != "" && n > 0 {
		r.add(key{b, registry, rule, src}, n)
	}
}

// Flush writes the pending counts in one transaction; on failure they are
// kept for the next flush.
func (r *Recorder) Flush(ctx context.Context) error {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = map[key]int64{}
	r.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	rows := make([]metadata.StatRow, 0, len(batch))
	for k, v := range batch {
		rows = append(rows, metadata.StatRow{Bucket: time.Unix(k.bucket, 0).UTC(), Registry: k.registry, Rule: k.rule, Name: k.name, Value: v})
	}
	if err := r.store.AddStats(ctx, rows); err != nil {
		r.mu.Lock()
		for k, v := range batch {
			r.pending[k] += v
		}
		r.mu.Unlock()
		return err
	}
	return nil
}

// Run flushes every interval and prunes old buckets until ctx ends (the
// server flushes once more after draining requests).
func (r *Recorder) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := r.Flush(ctx); err != nil {
				r.log.Warn("stats: flush failed; retrying at the next one", "err", err)
			}
			if err := r.store.PruneStats(ctx, r.now().Add(-Retention)); err != nil {
				r.log.Warn("stats: pruning old buckets failed", "err", err)
			}
		}
	}
}

// Series returns registry's counters from since on: the stored buckets
// plus what is not flushed yet.
func (r *Recorder) Series(ctx context.Context, registry string, since time.Time) ([]metadata.StatRow, error) {
	r.flushMu.Lock()
	defer r.flushMu.Unlock()
	rows, err := r.store.ListStats(ctx, registry, since.Truncate(Bucket))
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	for k, v := range r.pending {
		if k.registry == registry && k.bucket >= since.Truncate(Bucket).Unix() {
			rows = append(rows, metadata.StatRow{Bucket: time.Unix(k.bucket, 0).UTC(), Registry: registry, Rule: k.rule, Name: k.name, Value: v})
		}
	}
	r.mu.Unlock()
	return rows, nil
}
