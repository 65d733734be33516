package syncer

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/rules"
)

// SyncTag syncs one tag of an ActiveSync rule now (`arca cache sync
// --tag`), whatever its recorded state, and reports what it fetched. For a
// wildcard rule, tag is "<repository>:<tag>" with the repository on our
// side (e.g. "dockerhub/nginx:1.27"). A tag the rule's tag filter does not
// select is refused.
func (s *Syncer) SyncTag(ctx context.Context, registry, rule, tag string) (Report, error) {
	r, err := s.store.GetCacheRule(ctx, registry, rule)
	if err != nil {
		return Report{}, fmt.Errorf("cache rule %s: %w", rule, err)
	}
	if r.Mode() != rules.ActiveSync {
		return Report{}, invalid("cache rule '%s' does not have artifact sync enabled: only tags of a rule with syncMode ActiveSync can be synced", r.Name)
	}
	t, name, err := s.tagTarget(ctx, registry, r, tag)
	if err != nil {
		return Report{}, err
	}
	j, err := s.newJob(registry, r)
	if err != nil {
		return Report{}, err
	}
	if !j.f.tag(name) {
		if referrersTagRe.MatchString(name) {
			return Report{}, invalid("tag %q is a referrers tag-schema tag: referrers are synced with their subject (syncReferrers Enabled)", name)
		}
		return Report{}, invalid("tag %q is outside the tag filter of cache rule '%s' (%s)", name, r.Name, r.Filters.Tags)
	}
	started := time.Now()
	rep, err := j.syncTag(ctx, t, name, true)
	j.count(rep)
	switch {
	case err != nil:
	case rep.Result == OutcomeFailed: // before the digest: a failed HEAD has none
		err = fmt.Errorf("sync %s:%s from %s for cache rule '%s': %s", t.Repo, name, t.Upstream, r.Name, rep.Error)
	case rep.Digest == "": // the upstream has no such tag
		err = fmt.Errorf("tag %s not found in source %s of cache rule '%s': %w", name, t.Upstream, r.Name, metadata.ErrNotFound)
	}
	j.tagRunFinished(ctx, t.Repo+":"+name, started, err)
	return rep, err
}

// tagRunFinished counts a one-tag sync as a run of its rule, like a
// scheduled one: in the runs by result (statistics, arca_sync_runs_total,
// the "active sync finished" log line) and in the rule's
// artifactSyncStatus (unless a full run is under way: that one's status
// stands until it ends). The rule's run record (artifactSyncRun) stays its
// last full run: it is the schedule's state (a deferred run's resume time,
// the interval after a success), which syncing one tag must not move.
func (j *job) tagRunFinished(ctx context.Context, tag string, started time.Time, err error) {
	s, reg, r := j.s, j.reg, j.rule
	result, msg := ResultSucceeded, ""
	if err != nil {
		result, msg = ResultFailed, err.Error()
	}
	ended := time.Now().UTC()
	s.runFinished(reg, r.Name, result)
	s.log.Info("active sync finished", "registry", reg, "rule", r.Name, "run", newRunID(), "tag", tag, "result", result,
		"synced", j.synced.Load(), "unchanged", j.unchanged.Load(), "excluded", j.excluded.Load(), "failed", j.failed.Load(),
		"bytes", j.bytes.Load(), "duration", ended.Sub(started).Round(time.Millisecond), "err", msg)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if last, err := s.store.GetSyncRun(ctx, reg, r.Name); err == nil && last.Result == ResultRunning {
		return
	}
	st := rules.SyncStatus{Status: result, LastSyncTime: ended, LastError: msg}
	if r.SyncStatus != nil { // the tags the last full run synced
		st.SyncedTags = r.SyncStatus.SyncedTags
	}
	if err := s.store.SetCacheRuleSyncStatus(ctx, reg, r.Name, st); err != nil && !errors.Is(err, metadata.ErrNotFound) {
		s.log.Error("record cache rule sync status", "registry", reg, "rule", r.Name, "err", err)
	}
}

// tagTarget resolves the repository and tag SyncTag names.
func (s *Syncer) tagTarget(ctx context.Context, registry string, r rules.Rule, tag string) (cache.Target, string, error) {
	tgt, err := rules.ParseTarget(r.Target)
	if err != nil {
		return cache.Target{}, "", err
	}
	repo, name := tgt.Prefix, tag
	if tgt.Wildcard {
		i := strings.LastIndexByte(tag, ':')
		if i < 0 {
			return cache.Target{}, "", invalid("cache rule '%s' is a wildcard rule: name the repository too, as <repository>:<tag> (e.g. %s)", r.Name, exampleRepo(tgt.Prefix)+":latest")
		}
		repo, name = tag[:i], tag[i+1:]
		if !oci.ValidRepository(repo) || (tgt.Prefix != "" && !strings.HasPrefix(repo, tgt.Prefix+"/")) {
			return cache.Target{}, "", invalid("repository %q is not under the target %s of cache rule '%s'", repo, r.Target, r.Name)
		}
		if owner, ok, err := s.rules.Resolve(ctx, registry, repo, ""); err != nil {
			return cache.Target{}, "", err
		} else if ok && !strings.EqualFold(owner.Rule, r.Name) {
			return cache.Target{}, "", invalid("repository %q is served by cache rule '%s', not '%s'", repo, owner.Rule, r.Name)
		}
	}
	if !oci.ValidTag(name) {
		return cache.Target{}, "", invalid("%q is not a valid tag", name)
	}
	t, ok := s.rules.TargetFor(registry, r, repo)
	if !ok {
		return cache.Target{}, "", invalid("repository %q does not map through cache rule '%s'", repo, r.Name)
	}
	return t, name, nil
}

func exampleRepo(prefix string) string {
	if prefix == "" {
		return "library/alpine"
	}
	return prefix + "/alpine"
}

func invalid(format string, a ...any) error {
	return &rules.Error{Code: rules.CodeInvalidSync, Message: fmt.Sprintf(format, a...)}
}

// Estimate is the checkCacheRuleArtifactSyncEstimate result.
type Estimate struct {
	Name          string           `json:"name"`
	TotalCount    int              `json:"totalCount"`
	FilteredCount int              `json:"filteredCount"`
	Results       []EstimateResult `json:"results"`
}

// EstimateResult is one tag a rule would sync ("<repository>:<tag>" for
// wildcard rules).
type EstimateResult struct {
	Name string `json:"name"`
}

// Estimate is a dry run of rule r (not stored yet: `arca cache create
// --dry-run`): it lists the upstream's tags and applies the tag filter.
// TotalCount counts every tag listed; FilteredCount and Results the tags a
// run would consider. The platform, image-type and artifact-type filters
// need each manifest and are applied when the run fetches them, so they do
// not change the estimate. A wildcard rule is estimated over the
// repositories already held under its target (those a run would sync).
func (s *Syncer) Estimate(ctx context.Context, registry string, r rules.Rule) (Estimate, error) {
	if err := r.Validate(); err != nil {
		return Estimate{}, err
	}
	if r.Mode() != rules.ActiveSync {
		return Estimate{}, invalid("a dry run estimates what artifact sync would copy: it requires syncMode ActiveSync")
	}
	j, err := s.newJob(registry, r)
	if err != nil {
		return Estimate{}, err
	}
	targets, err := s.targets(ctx, registry, r)
	if err != nil {
		return Estimate{}, err
	}
	est := Estimate{Name: r.Name, Results: []EstimateResult{}}
	wildcard := r.Wildcard()
	for _, t := range targets {
		tags, total, err := j.listTags(ctx, t)
		if err != nil {
			return Estimate{}, fmt.Errorf("estimate cache rule '%s': %s from %s: %w", r.Name, t.Repo, t.Upstream, err)
		}
		est.TotalCount += total
		est.FilteredCount += len(tags)
		for _, tag := range tags {
			if wildcard {
				tag = t.Repo + ":" + tag
			}
			est.Results = append(est.Results, EstimateResult{Name: tag})
		}
	}
	return est, nil
}

// Status is a rule's active-sync status, for `cache show` and the API.
type Status struct {
	Result        string       `json:"status,omitempty"` // a Result*; "" before the first run
	RunID         string       `json:"runId,omitempty"`
	StartedAt     armtime.Time `json:"lastRunStart,omitzero"`
	EndedAt       armtime.Time `json:"lastRunEnd,omitzero"`
	NextAt        armtime.Time `json:"deferredUntil,omitzero"`
	TagsSynced    int          `json:"tagsSynced"`
	TagsUnchanged int          `json:"tagsUnchanged"`
	TagsExcluded  int          `json:"tagsExcluded"`
	TagsFailed    int          `json:"tagsFailed"` // tags whose last sync failed (in this run or on demand since)
	BytesFetched  int64        `json:"bytesFetched"`
	Error         string       `json:"lastError,omitempty"`
	TagErrors     []TagError   `json:"tagErrors,omitempty"`
}

// TagError is the last error of one tag.
type TagError struct {
	Repo   string       `json:"repository"`
	Tag    string       `json:"tag"`
	Digest string       `json:"digest,omitempty"`
	Error  string       `json:"error"`
	At     armtime.Time `json:"time"`
}

// maxTagErrors bounds the tag errors Status returns.
const maxTagErrors = 50

// Status returns the rule's last (or current) run and its tags' last
// errors.
func (s *Syncer) Status(ctx context.Context, registry, rule string) (Status, error) {
	run, err := s.store.GetSyncRun(ctx, registry, rule)
	if errors.Is(err, metadata.ErrNotFound) {
		return Status{}, nil
	}
	if err != nil {
		return Status{}, err
	}
	st := Status{Result: run.Result, RunID: run.RunID, StartedAt: armtime.Of(run.StartedAt), EndedAt: armtime.Of(run.EndedAt), NextAt: armtime.Of(run.NextAt),
		TagsSynced: run.TagsSynced, TagsUnchanged: run.TagsUnchanged, TagsExcluded: run.TagsExcluded,
		TagsFailed: run.TagsFailed, BytesFetched: run.BytesFetched, Error: run.Error}
	tags, err := s.store.SyncTagErrors(ctx, registry, rule, maxTagErrors)
	if err != nil {
		return st, err
	}
	// Counted from the tags' states, which tagErrors lists: an on-demand
	// sync's failure, or one in a run still under way, counts at once.
	if st.TagsFailed, err = s.store.CountSyncTagErrors(ctx, registry, rule); err != nil {
		return st, err
	}
	for _, t := range tags {
		st.TagErrors = append(st.TagErrors, TagError{Repo: t.Repo, Tag: t.Tag, Digest: t.Digest, Error: t.Error, At: armtime.Of(t.UpdatedAt)})
	}
	return st, nil
}
