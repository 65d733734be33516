package syncer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

func ruleKey(registry, rule string) string {
	return strings.ToLower(registry) + "\x00" + strings.ToLower(rule)
}

// Trigger asks for a sync of a rule soon (it was created or changed). With
// rule "" it only wakes the scheduler, which syncs at once every rule whose
// configuration differs from its last run's (fit for the management API's
// per-registry change hook). Without any Trigger, Run notices changes at
// its next poll, on every replica.
func (s *Syncer) Trigger(registry, rule string) {
	if rule != "" {
		s.mu.Lock()
		s.triggered[ruleKey(registry, rule)] = true
		s.mu.Unlock()
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run schedules ActiveSync rules until ctx ends: a rule runs at once when
// it is new, changed, triggered, or its last run was interrupted; then
// every Interval (RetryFailed after a failure; a deferred run at its
// NextAt). Each run holds the rule's lease, so replicas sharing the
// metadata store never sync one rule twice at a time. On return, runs
// under way have stopped and recorded where they were.
func (s *Syncer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(s.opts.Poll)
	defer tick.Stop()
	for {
		s.schedule(ctx, &wg)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-s.wake:
		}
	}
}

// schedule starts the runs that are due, up to MaxRules at once.
func (s *Syncer) schedule(ctx context.Context, wg *sync.WaitGroup) {
	refs, err := s.store.ActiveSyncRules(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("active sync: list rules", "err", err)
		}
		return
	}
	for _, ref := range refs {
		if ctx.Err() != nil {
			return
		}
		key := ruleKey(ref.Registry, ref.Name)
		r, err := s.store.GetCacheRule(ctx, ref.Registry, ref.Name)
		if err != nil {
			continue // deleted since the listing
		}
		if !s.due(ctx, ref, r) || !s.claim(key, false) {
			continue
		}
		// Decided before the lease: another replica may have finished the
		// run in between, so decide again once the lease is ours.
		recheck := func(ctx context.Context) (rules.Rule, bool) {
			cur, err := s.store.GetCacheRule(ctx, ref.Registry, ref.Name)
			if err != nil || cur.Mode() != rules.ActiveSync {
				return cur, false
			}
			return cur, s.dueByState(ctx, ref.Registry, cur)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.unclaim(key)
			_, _, _ = s.runLeased(ctx, ref.Registry, r, recheck)
		}()
	}
}

// due reports whether rule r should run now.
func (s *Syncer) due(ctx context.Context, ref metadata.RuleRef, r rules.Rule) bool {
	key := ruleKey(ref.Registry, ref.Name)
	s.mu.Lock()
	triggered, running := s.triggered[key], s.running[key]
	s.mu.Unlock()
	if running {
		return false
	}
	return triggered || s.dueByState(ctx, ref.Registry, r)
}

// dueByState reports whether r's recorded runs make it due now.
func (s *Syncer) dueByState(ctx context.Context, registry string, r rules.Rule) bool {
	last, err := s.store.GetSyncRun(ctx, registry, r.Name)
	if errors.Is(err, metadata.ErrNotFound) {
		return true
	}
	if err != nil {
		s.log.Error("active sync: read last run", "registry", registry, "rule", r.Name, "err", err)
		return false
	}
	now := time.Now()
	switch {
	case last.ConfigHash != runHash(r):
		return true
	case last.Result == ResultRunning, last.Result == ResultInterrupted:
		return true // resume (the lease keeps a live run elsewhere exclusive)
	case last.Result == ResultDeferred:
		return !now.Before(last.NextAt)
	case last.Result == ResultFailed:
		return !now.Before(last.EndedAt.Add(s.opts.RetryFailed))
	}
	return !now.Before(last.EndedAt.Add(s.opts.Interval))
}

// claim marks a rule running here (within MaxRules unless anyway); it
// clears the rule's trigger.
func (s *Syncer) claim(key string, anyway bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[key] || (!anyway && len(s.running) >= s.opts.MaxRules) {
		return false
	}
	s.running[key] = true
	delete(s.triggered, key)
	return true
}

func (s *Syncer) unclaim(key string) {
	s.mu.Lock()
	delete(s.running, key)
	s.mu.Unlock()
	select { // a slot is free: look again
	case s.wake <- struct{}{}:
	default:
	}
}

// runLeased runs rule r while holding its lease, renewing it; losing the
// lease (another replica took it after we stalled) stops the run. It
// reports false when another replica holds the lease.
func (s *Syncer) runLeased(ctx context.Context, reg string, r rules.Rule, recheck func(context.Context) (rules.Rule, bool)) (metadata.SyncRun, bool, error) {
	got, err := s.store.AcquireSyncLease(ctx, reg, r.Name, s.opts.Holder, s.opts.LeaseTTL)
	if err != nil || !got {
		if err != nil && ctx.Err() == nil {
			s.log.Error("active sync: take lease", "registry", reg, "rule", r.Name, "err", err)
		}
		return metadata.SyncRun{}, false, err
	}
	defer s.release(ctx, reg, r.Name)
	if recheck != nil {
		cur, due := recheck(ctx)
		if !due {
			return metadata.SyncRun{}, true, nil
		}
		r = cur
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		s.renew(runCtx, cancel, reg, r.Name)
	}()
	run := s.syncRule(runCtx, reg, r)
	cancel()
	<-renewed
	return run, true, nil
}

func (s *Syncer) release(ctx context.Context, reg, rule string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.store.ReleaseSyncLease(ctx, reg, rule, s.opts.Holder); err != nil {
		s.log.Warn("active sync: release lease", "registry", reg, "rule", rule, "err", err)
	}
}

// ErrBusy is SyncRule's answer while the rule is being synced already
// (here, or by another replica).
var ErrBusy = errors.New("the cache rule is being synced already")

// SyncRule runs a full sync of an ActiveSync rule now, under its lease, and
// returns its status when it ends (for an API "sync the rule now", and
// tests). While another run of the rule is going on it returns ErrBusy.
func (s *Syncer) SyncRule(ctx context.Context, registry, rule string) (Status, error) {
	r, err := s.store.GetCacheRule(ctx, registry, rule)
	if err != nil {
		return Status{}, fmt.Errorf("cache rule %s: %w", rule, err)
	}
	if r.Mode() != rules.ActiveSync {
		return Status{}, invalid("cache rule '%s' does not have artifact sync enabled (syncMode ActiveSync)", r.Name)
	}
	key := ruleKey(registry, r.Name)
	if !s.claim(key, true) {
		return Status{}, fmt.Errorf("cache rule %s: %w", r.Name, ErrBusy)
	}
	defer s.unclaim(key)
	if _, got, err := s.runLeased(ctx, registry, r, nil); err != nil {
		return Status{}, err
	} else if !got {
		return Status{}, fmt.Errorf("cache rule %s: %w", r.Name, ErrBusy)
	}
	return s.Status(context.WithoutCancel(ctx), registry, r.Name)
}

func (s *Syncer) renew(ctx context.Context, cancel context.CancelFunc, reg, rule string) {
	t := time.NewTicker(s.opts.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		got, err := s.store.AcquireSyncLease(ctx, reg, rule, s.opts.Holder, s.opts.LeaseTTL)
		if ctx.Err() != nil {
			return
		}
		if err != nil || !got {
			s.log.Error("active sync: lost the lease; stopping the run", "registry", reg, "rule", rule, "err", err)
			cancel()
			return
		}
	}
}
