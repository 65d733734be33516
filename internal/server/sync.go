package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/syncer"
)

// SyncOptions configure active sync.
type SyncOptions struct {
	// Interval between runs of an ActiveSync rule.
	Interval time.Duration
	// Concurrency bounds concurrent upstream requests per upstream host.
	Concurrency int
	// MinRateLimitRemaining defers runs while an upstream's reported
	// ratelimit-remaining is below it.
	MinRateLimitRemaining int
	// Poll is how often a replica looks for due rules, among them those
	// whose lease a dead replica left to lapse (0: the syncer's default).
	Poll time.Duration
}

func (s *Server) newSyncer(pt *pullThrough, reg prometheus.Registerer, runs syncer.RunRecorder) (*syncer.Syncer, error) {
	o := s.opts.Sync
	return syncer.New(syncer.Options{
		Cache: pt.cache, Rules: pt.rules, Store: s.meta, Upstream: pt.up, Logger: s.log, Registerer: reg, Runs: runs,
		Interval: o.Interval, Concurrency: o.Concurrency, MinRateLimitRemaining: o.MinRateLimitRemaining,
		Holder: s.replica, LeaseTTL: s.opts.Cluster.SyncLeaseTTL, Poll: o.Poll,
	})
}

// syncAPI adapts the syncer to the management API's interface.
type syncAPI struct{ sy *syncer.Syncer }

func (a syncAPI) Estimate(ctx context.Context, registry string, r rules.Rule) (any, error) {
	return a.sy.Estimate(ctx, registry, r)
}

func (a syncAPI) SyncTag(ctx context.Context, registry, rule, tag string) (any, error) {
	return a.sy.SyncTag(ctx, registry, rule, tag)
}

func (a syncAPI) Status(ctx context.Context, registry, rule string) (any, error) {
	return a.sy.Status(ctx, registry, rule)
}
