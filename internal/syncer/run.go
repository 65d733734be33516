package syncer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// Run results (metadata.SyncRun.Result, rules.SyncStatus.Status).
const (
	ResultRunning     = "Running"
	ResultSucceeded   = "Succeeded"
	ResultFailed      = "Failed"      // the listing failed, or some tags did (see their errors)
	ResultDeferred    = "Deferred"    // stopped to spare the upstream; resumes at NextAt
	ResultInterrupted = "Interrupted" // the process stopped; resumes at the next start
)

// job is one run's (or one SyncTag's) view of a rule.
type job struct {
	s    *Syncer
	reg  string
	rule rules.Rule
	f    *filter
	hash string

	bytes                               atomic.Int64
	synced, unchanged, excluded, failed atomic.Int64

	mu      sync.Mutex
	lastErr string // last tag error, for the run's summary
}

func (s *Syncer) newJob(reg string, r rules.Rule) (*job, error) {
	f, err := compile(r)
	if err != nil {
		return nil, err
	}
	return &job{s: s, reg: reg, rule: r, f: f, hash: contentHash(r)}, nil
}

// count tallies a tag's outcome.
func (j *job) count(rep Report) {
	switch rep.Result {
	case OutcomeSynced:
		j.synced.Add(1)
	case OutcomeUnchanged:
		j.unchanged.Add(1)
	case OutcomeExcluded:
		j.excluded.Add(1)
	case OutcomeFailed:
		j.failed.Add(1)
		j.mu.Lock()
		j.lastErr = rep.Repo + ":" + rep.Tag + ": " + rep.Error
		j.mu.Unlock()
		j.s.log.Warn("active sync of a tag failed", "registry", j.reg, "rule", j.rule.Name, "repo", rep.Repo, "tag", rep.Tag, "err", rep.Error)
	default:
		return
	}
	j.s.metrics.tags.WithLabelValues(rep.Result).Inc()
}

// syncRule runs one full sync of rule r and records it.
func (s *Syncer) syncRule(ctx context.Context, reg string, r rules.Rule) metadata.SyncRun {
	run := metadata.SyncRun{Registry: reg, Rule: r.Name, RunID: newRunID(), Result: ResultRunning,
		StartedAt: time.Now().UTC(), ConfigHash: runHash(r)}
	s.saveRun(ctx, r, run)
	labels := []string{strings.ToLower(reg), r.Name}
	s.metrics.lastStart.WithLabelValues(labels...).Set(float64(run.StartedAt.Unix()))
	s.metrics.running.WithLabelValues(labels...).Set(1)
	defer s.metrics.running.WithLabelValues(labels...).Set(0)
	s.log.Info("active sync started", "registry", reg, "rule", r.Name, "source", r.Source, "run", run.RunID)

	j, err := s.newJob(reg, r)
	if err == nil {
		err = j.run(ctx)
	}
	run.EndedAt = time.Now().UTC()
	if j != nil {
		run.TagsSynced, run.TagsUnchanged = int(j.synced.Load()), int(j.unchanged.Load())
		run.TagsExcluded, run.TagsFailed = int(j.excluded.Load()), int(j.failed.Load())
		run.BytesFetched = j.bytes.Load()
	}
	var d *deferral
	switch {
	case errors.As(err, &d):
		run.Result, run.NextAt, run.Error = ResultDeferred, d.until.UTC(), d.msg
	case ctx.Err() != nil:
		run.Result, run.Error = ResultInterrupted, "the run was interrupted (shutdown or lost lease); it resumes where it stopped"
	case err != nil:
		run.Result, run.Error = ResultFailed, err.Error()
	case run.TagsFailed > 0:
		j.mu.Lock()
		run.Result, run.Error = ResultFailed, fmt.Sprintf("%d tags failed; last: %s", run.TagsFailed, j.lastErr)
		j.mu.Unlock()
	default:
		run.Result = ResultSucceeded
	}
	s.saveRun(ctx, r, run)
	s.runFinished(reg, r.Name, run.Result)
	s.metrics.lastEnd.WithLabelValues(labels...).Set(float64(run.EndedAt.Unix()))
	if run.Result == ResultSucceeded {
		s.metrics.lastOK.WithLabelValues(labels...).Set(float64(run.EndedAt.Unix()))
	}
	s.log.Info("active sync finished", "registry", reg, "rule", r.Name, "run", run.RunID, "result", run.Result,
		"synced", run.TagsSynced, "unchanged", run.TagsUnchanged, "excluded", run.TagsExcluded, "failed", run.TagsFailed,
		"bytes", run.BytesFetched, "duration", run.EndedAt.Sub(run.StartedAt).Round(time.Millisecond), "err", run.Error)
	return run
}

// runFinished counts a finished run of rule by its result.
func (s *Syncer) runFinished(reg, rule, result string) {
	s.metrics.runs.WithLabelValues(result).Inc()
	if s.opts.Runs != nil {
		s.opts.Runs.SyncRun(reg, rule, result)
	}
}

// saveRun persists the run and mirrors it into the rule's syncStatus.
func (s *Syncer) saveRun(ctx context.Context, r rules.Rule, run metadata.SyncRun) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.store.PutSyncRun(ctx, run); err != nil {
		s.log.Error("record active sync run", "registry", run.Registry, "rule", run.Rule, "err", err)
	}
	st := rules.SyncStatus{Status: run.Result, LastSyncTime: run.EndedAt, LastError: run.Error,
		SyncedTags: run.TagsSynced + run.TagsUnchanged}
	if run.EndedAt.IsZero() {
		st.LastSyncTime = run.StartedAt
		if r.SyncStatus != nil { // keep the last finished run's figures while running
			st.SyncedTags = r.SyncStatus.SyncedTags
		}
	}
	err := s.store.SetCacheRuleSyncStatus(ctx, run.Registry, run.Rule, st)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		s.log.Error("record cache rule sync status", "registry", run.Registry, "rule", run.Rule, "err", err)
	}
}

// run syncs every repository of the rule.
func (j *job) run(ctx context.Context) error {
	targets, err := j.s.targets(ctx, j.reg, j.rule)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range targets {
		tags, _, err := j.listTags(ctx, t)
		if err == nil {
			err = j.syncTags(ctx, t, tags)
		}
		var d *deferral
		if ctx.Err() != nil || errors.As(err, &d) {
			return err
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (from %s): %w", t.Repo, t.Upstream, err))
		}
	}
	return errors.Join(errs...)
}

// listTags lists t's upstream tags (all pages) and returns those the
// rule's tag filter selects, with the total count.
func (j *job) listTags(ctx context.Context, t cache.Target) ([]string, int, error) {
	var selected []string
	total := 0
	err := j.call(ctx, t, func() error {
		return j.s.up.Tags(ctx, t.Upstream, func(page []string) error {
			total += len(page)
			for _, tag := range page {
				if j.f.tag(tag) {
					selected = append(selected, tag)
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list tags: %w", err)
	}
	return selected, total, nil
}

// syncTags syncs tags of t, Concurrency at a time. The first run-level
// error (deferral, cancellation, a store failure) stops the rest.
func (j *job) syncTags(ctx context.Context, t cache.Target, tags []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(j.s.opts.Concurrency)
	for _, tag := range tags {
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			rep, err := j.syncTag(gctx, t, tag, false)
			j.count(rep)
			return err
		})
	}
	return g.Wait()
}

// targets are the repositories a rule syncs. A static rule has one. A
// wildcard rule has no list of its own (most upstreams, Docker Hub first,
// offer no catalog), so it syncs the repositories already held under its
// target: those pulled through at least once, or synced by SyncTag.
func (s *Syncer) targets(ctx context.Context, reg string, r rules.Rule) ([]cache.Target, error) {
	tgt, err := rules.ParseTarget(r.Target)
	if err != nil {
		return nil, err
	}
	if !tgt.Wildcard {
		t, ok := s.rules.TargetFor(reg, r, tgt.Prefix)
		if !ok {
			return nil, fmt.Errorf("cache rule %s: target %s does not map to its source", r.Name, r.Target)
		}
		return []cache.Target{t}, nil
	}
	repos, err := s.reposUnder(ctx, reg, tgt.Prefix)
	if err != nil {
		return nil, err
	}
	var out []cache.Target
	for _, repo := range repos {
		// Another rule (static, or a longer wildcard) may own the repository.
		if owner, ok, err := s.rules.Resolve(ctx, reg, repo, ""); err != nil {
			return nil, err
		} else if ok && !strings.EqualFold(owner.Rule, r.Name) {
			continue
		}
		if t, ok := s.rules.TargetFor(reg, r, repo); ok {
			out = append(out, t)
		}
	}
	return out, nil
}

// reposUnder lists the registry's repositories under prefix ("" for all).
func (s *Syncer) reposUnder(ctx context.Context, reg, prefix string) ([]string, error) {
	var out []string
	last := ""
	if prefix != "" {
		last = prefix + "/" // names under prefix sort after it
	}
	for {
		page, more, err := s.store.ListRepositories(ctx, reg, last, 1000)
		if err != nil {
			return nil, fmt.Errorf("list repositories: %w", err)
		}
		for _, repo := range page {
			if prefix != "" && !strings.HasPrefix(repo, prefix+"/") {
				return out, nil
			}
			out = append(out, repo)
		}
		if !more || len(page) == 0 {
			return out, nil
		}
		last = page[len(page)-1]
	}
}
