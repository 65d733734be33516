package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/lifecycle"
	"github.com/arcacache/arca/internal/syncer"
)

// LifecycleOptions configure access tracking, eviction and quotas.
type LifecycleOptions struct {
	// EvictionInterval is the time between eviction passes (retention,
	// then the cache quota) over every registry (<= 0: DefaultEvictionInterval).
	EvictionInterval time.Duration
	// PullFlushInterval is how often batched pull times are written
	// (<= 0: DefaultPullFlushInterval); a crash loses at most this much.
	PullFlushInterval time.Duration
}

// Defaults of LifecycleOptions.
const (
	DefaultEvictionInterval  = 10 * time.Minute
	DefaultPullFlushInterval = 30 * time.Second
	// pushQuotaMaxAge is how old the usage a push quota check reads may be.
	pushQuotaMaxAge = 5 * time.Second
)

type lifecycleParts struct {
	tracker *lifecycle.Tracker
	evictor *lifecycle.Evictor
	quota   *lifecycle.PushQuota
}

func (s *Server) newLifecycle(reg prometheus.Registerer) (*lifecycleParts, error) {
	if s.opts.Lifecycle.EvictionInterval <= 0 {
		s.opts.Lifecycle.EvictionInterval = DefaultEvictionInterval
	}
	if s.opts.Lifecycle.PullFlushInterval <= 0 {
		s.opts.Lifecycle.PullFlushInterval = DefaultPullFlushInterval
	}
	tr, err := lifecycle.NewTracker(s.meta, s.log, nil)
	if err != nil {
		return nil, err
	}
	ev, err := lifecycle.NewEvictor(s.meta, reg, s.log, syncer.DefaultHolder(), nil)
	if err != nil {
		return nil, err
	}
	q, err := lifecycle.NewPushQuota(s.meta, pushQuotaMaxAge)
	if err != nil {
		return nil, err
	}
	return &lifecycleParts{tracker: tr, evictor: ev, quota: q}, nil
}

// registryNames lists the registries served now.
func (s *Server) registryNames() []string {
	var out []string
	for _, r := range s.regs.List() {
		out = append(out, r.Name)
	}
	return out
}

// lifecycleAPI adapts the lifecycle parts to the management API.
type lifecycleAPI struct{ s *Server }

func (a lifecycleAPI) Usages(ctx context.Context, registry string) ([]lifecycle.Usage, error) {
	return lifecycle.Usages(ctx, a.s.meta, registry)
}

func (a lifecycleAPI) Purge(ctx context.Context, registry, rule string, olderThan time.Duration, dryRun bool) (lifecycle.Result, error) {
	return a.s.life.evictor.Purge(ctx, registry, rule, olderThan, dryRun)
}
