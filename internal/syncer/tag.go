package syncer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/syncer/artifactkind"
	"github.com/arcacache/arca/internal/upstream"
)

// Tag outcomes (Report.Result, metrics).
const (
	OutcomeSynced    = "synced"    // new or moved, or content was missing: fetched
	OutcomeUnchanged = "unchanged" // already current: at most a HEAD (and referrer listings)
	OutcomeExcluded  = "excluded"  // the rule's image-type or artifact-type filter leaves it out
	OutcomeFailed    = "failed"
)

// Per-tag states persisted in sync_tags.
const (
	stateDone     = "done"
	stateExcluded = "excluded"
	stateFailed   = "failed"
)

// maxDepth bounds nested indexes and referrers of referrers.
const maxDepth = 3

// Report says what syncing one tag did.
type Report struct {
	Rule   string        `json:"rule"`
	Repo   string        `json:"repository"`
	Tag    string        `json:"tag"`
	Digest digest.Digest `json:"digest,omitempty"`
	Result string        `json:"result"` // an Outcome
	// What was fetched from the upstream (content already stored is not).
	Manifests int   `json:"manifestsFetched"`
	Blobs     int   `json:"blobsFetched"`
	Bytes     int64 `json:"bytesFetched"`
	// Referrers stored (fetched now or before) for the synced manifests.
	Referrers int `json:"referrers"`
	// Platforms is the os/arch[/variant] of the index entries synced;
	// SkippedPlatforms those the platform filter left to pull-through.
	Platforms        []string `json:"platforms,omitempty"`
	SkippedPlatforms []string `json:"skippedPlatforms,omitempty"`
	Error            string   `json:"error,omitempty"`
}

// deferral stops a run to spare an upstream; the rule runs again after until.
type deferral struct {
	until  time.Time
	reason string // ratelimit, toomanyrequests
	msg    string
}

func (d *deferral) Error() string { return d.msg }

// syncTag brings one tag of t up to date. The error is for the run (a
// deferral, or the context ending); a failure of this tag alone is in the
// report. force walks the tag even when it is recorded as current.
func (j *job) syncTag(ctx context.Context, t cache.Target, tag string, force bool) (Report, error) {
	rep := Report{Rule: j.rule.Name, Repo: t.Repo, Tag: tag}
	var desc upstream.Descriptor
	err := j.call(ctx, t, func() (err error) {
		desc, err = j.s.up.HeadManifest(ctx, t.Upstream, tag)
		return err
	})
	if upstream.IsNotFound(err) {
		// Deleted upstream since the listing: the cached tag stays.
		rep.Result = OutcomeUnchanged
		return rep, nil
	}
	if err != nil {
		return j.fail(ctx, t, rep, err)
	}
	rep.Digest = desc.Digest
	if !force && j.current(ctx, t, tag, desc.Digest) {
		rep.Result = OutcomeUnchanged
		return rep, nil
	}
	if !j.f.imageType(desc.MediaType) {
		return j.exclude(ctx, t, rep)
	}
	if err := j.checkBudget(ctx, t); err != nil {
		return rep, err
	}
	w := &walk{j: j, t: t, rep: &rep, seen: map[digest.Digest]bool{}}
	top, err := w.manifest(ctx, desc.Digest, j.f.keepTop)
	if err != nil {
		return j.fail(ctx, t, rep, err)
	}
	if !top.Stored || !j.f.keepTop(top.Parsed) {
		return j.exclude(ctx, t, rep)
	}
	subjects := []digest.Digest{desc.Digest}
	if err := w.contents(ctx, top.Parsed, 0, &subjects); err != nil {
		return j.fail(ctx, t, rep, err)
	}
	if j.f.referrers {
		if err := w.referrers(ctx, subjects, 0); err != nil {
			return j.fail(ctx, t, rep, err)
		}
	}
	old, _ := j.s.store.GetTag(ctx, j.reg, t.Repo, tag)
	if err := j.s.cache.TagManifest(ctx, j.reg, t.Repo, tag, desc.Digest); err != nil {
		return j.fail(ctx, t, rep, err)
	}
	rep.Result = OutcomeUnchanged
	if old.Digest != desc.Digest || rep.Manifests+rep.Blobs > 0 {
		rep.Result = OutcomeSynced
	}
	return rep, j.record(ctx, t, rep, stateDone, "")
}

// current reports whether tag was synced under this configuration at
// digest d and still points there. With referrers enabled a tag is walked
// every run: new signatures get attached to unchanged images.
func (j *job) current(ctx context.Context, t cache.Target, tag string, d digest.Digest) bool {
	if j.f.referrers {
		return false
	}
	st, err := j.s.store.GetSyncTag(ctx, j.reg, j.rule.Name, t.Repo, tag)
	if err != nil || st.Digest != d.String() || st.ConfigHash != j.hash {
		return false
	}
	switch st.State {
	case stateExcluded:
		return true
	case stateDone:
		local, err := j.s.store.GetTag(ctx, j.reg, t.Repo, tag)
		return err == nil && local.Digest == d
	}
	return false
}

func (j *job) exclude(ctx context.Context, t cache.Target, rep Report) (Report, error) {
	rep.Result = OutcomeExcluded
	return rep, j.record(ctx, t, rep, stateExcluded, "")
}

// fail records a tag's failure, unless the run itself is stopping.
func (j *job) fail(ctx context.Context, t cache.Target, rep Report, err error) (Report, error) {
	if ctx.Err() != nil {
		return rep, ctx.Err()
	}
	var d *deferral
	if errors.As(err, &d) {
		return rep, d
	}
	rep.Result, rep.Error = OutcomeFailed, err.Error()
	return rep, j.record(ctx, t, rep, stateFailed, err.Error())
}

func (j *job) record(ctx context.Context, t cache.Target, rep Report, state, msg string) error {
	err := j.s.store.PutSyncTag(context.WithoutCancel(ctx), metadata.SyncTag{
		Registry: j.reg, Rule: j.rule.Name, Repo: t.Repo, Tag: rep.Tag, Digest: rep.Digest.String(),
		State: state, Error: msg, ConfigHash: j.hash,
	})
	if err != nil {
		return fmt.Errorf("record sync of %s:%s: %w", t.Repo, rep.Tag, err)
	}
	return nil
}

// call runs one upstream request within the host's concurrency limit and
// turns a 429 into a deferral (the client already waited out short
// Retry-Afters and retried).
func (j *job) call(ctx context.Context, t cache.Target, fn func() error) error {
	release, err := j.s.limits.acquire(ctx, t.Upstream.Host)
	if err != nil {
		return err
	}
	err = fn()
	release()
	var ue *upstream.Error
	if errors.As(err, &ue) && ue.StatusCode == http.StatusTooManyRequests {
		// Every request to the host waits out Retry-After; the run stops
		// and comes back no sooner than a minute.
		j.s.limits.pause(t.Upstream.Host, time.Now().Add(ue.RetryAfter))
		wait := max(ue.RetryAfter, time.Minute)
		until := time.Now().Add(wait)
		j.s.metrics.deferrals.WithLabelValues("toomanyrequests").Inc()
		return &deferral{until: until, reason: "toomanyrequests",
			msg: fmt.Sprintf("upstream %s answered 429 Too Many Requests; sync deferred for %s", t.Upstream.Host, wait.Round(time.Second))}
	}
	return err
}

// checkBudget defers the run while the upstream's rate-limit budget (Docker
// Hub's ratelimit-remaining, as last seen by any replica) is below the
// floor.
func (j *job) checkBudget(ctx context.Context, t cache.Target) error {
	floor := j.s.opts.MinRateLimitRemaining
	if floor < 0 {
		return nil
	}
	rl, ok := j.s.rateLimit(ctx, t.Upstream.CredKey, upstream.CanonicalHost(t.Upstream.Host))
	if !ok || rl.Remaining >= floor {
		return nil
	}
	window := rl.Window
	if window <= 0 {
		window = time.Hour
	}
	until := rl.ObservedAt.Add(window)
	if !until.After(time.Now()) {
		return nil // the window has passed since: the budget is back
	}
	j.s.metrics.deferrals.WithLabelValues("ratelimit").Inc()
	return &deferral{until: until, reason: "ratelimit",
		msg: fmt.Sprintf("upstream %s rate limit nearly spent (%d of %d left); sync deferred until %s",
			t.Upstream.Host, rl.Remaining, rl.Limit, until.UTC().Format(time.RFC3339))}
}

// rateLimit is the freshest rate-limit observation of a source: this
// replica's own, or one another replica recorded in the store. The budget
// is the cluster's: a replica that never asked the upstream itself defers
// as soon as any replica saw it nearly spent.
func (s *Syncer) rateLimit(ctx context.Context, credKey, host string) (upstream.RateLimit, bool) {
	rl, ok := s.up.RateLimit(credKey, host)
	stored, err := s.store.GetRateLimit(ctx, metadata.RateLimitSource(credKey, host))
	if err != nil {
		if !errors.Is(err, metadata.ErrNotFound) {
			s.log.Warn("active sync: read the recorded rate limit", "host", host, "err", err)
		}
		return rl, ok
	}
	if ok && !stored.ObservedAt.After(rl.ObservedAt) {
		return rl, ok
	}
	return upstream.RateLimit{Limit: stored.Limit, Remaining: stored.Remaining, Window: stored.Window, ObservedAt: stored.ObservedAt}, true
}

// walk fetches what one tag selects.
type walk struct {
	j    *job
	t    cache.Target
	rep  *Report
	seen map[digest.Digest]bool
}

func (w *walk) manifest(ctx context.Context, d digest.Digest, keep func(*oci.Manifest) bool) (cache.SyncedManifest, error) {
	var sm cache.SyncedManifest
	err := w.j.call(ctx, w.t, func() (err error) {
		sm, err = w.j.s.cache.SyncManifest(ctx, w.j.reg, w.t, d, keep)
		return err
	})
	if err != nil {
		return sm, err
	}
	if sm.Fetched {
		w.rep.Manifests++
		w.fetched(int64(len(sm.Body)))
	}
	return sm, nil
}

func (w *walk) fetched(n int64) {
	w.rep.Bytes += n
	w.j.bytes.Add(n)
	w.j.s.metrics.bytes.Add(float64(n))
}

// contents stores what manifest m needs: an index's selected entries (and
// theirs), an image's config and layers. Synced entries join subjects.
func (w *walk) contents(ctx context.Context, m *oci.Manifest, depth int, subjects *[]digest.Digest) error {
	if !oci.IsIndex(m.MediaType) {
		return w.blobs(ctx, m)
	}
	if depth >= maxDepth {
		return nil
	}
	for _, c := range m.Manifests {
		if !w.j.f.platform(c.Platform) {
			w.rep.SkippedPlatforms = append(w.rep.SkippedPlatforms, platformName(c.Platform))
			continue
		}
		if depth == 0 && c.Platform != nil {
			w.rep.Platforms = append(w.rep.Platforms, c.Platform.String())
		}
		child, err := w.manifest(ctx, c.Digest, nil)
		if err != nil {
			return err
		}
		*subjects = append(*subjects, c.Digest)
		if err := w.contents(ctx, child.Parsed, depth+1, subjects); err != nil {
			return err
		}
	}
	return nil
}

func platformName(p *oci.Platform) string {
	if p == nil {
		return "(none)"
	}
	return p.String()
}

func (w *walk) blobs(ctx context.Context, m *oci.Manifest) error {
	var descs []oci.Descriptor
	if m.Config != nil {
		descs = append(descs, *m.Config)
	}
	for _, l := range m.Layers {
		if len(l.URLs) == 0 { // non-distributable layers live elsewhere
			descs = append(descs, l)
		}
	}
	for _, d := range descs {
		if w.seen[d.Digest] {
			continue
		}
		w.seen[d.Digest] = true
		var st cache.Status
		err := w.j.call(ctx, w.t, func() (err error) {
			st, err = w.j.s.cache.Prefetch(ctx, w.j.reg, w.t, d.Digest)
			return err
		})
		if err != nil {
			return fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		if st == cache.Miss {
			w.rep.Blobs++
			w.fetched(d.Size)
		}
	}
	return nil
}

// referrers stores the referrers of subjects that the artifact-type filter
// selects, and theirs (a signature of an SBOM), through the upstream's
// referrers API or its tag-schema fallback.
func (w *walk) referrers(ctx context.Context, subjects []digest.Digest, depth int) error {
	if depth >= maxDepth {
		return nil
	}
	for _, s := range subjects {
		var list []oci.Descriptor
		err := w.j.call(ctx, w.t, func() (err error) {
			list, err = w.j.s.up.Referrers(ctx, w.t.Upstream, s, "")
			return err
		})
		if err != nil {
			return fmt.Errorf("referrers of %s: %w", s, err)
		}
		var next []digest.Digest
		for _, d := range list {
			if w.seen[d.Digest] {
				continue
			}
			w.seen[d.Digest] = true
			if d.ArtifactType != "" && !w.j.f.artifact(artifactkind.OfDescriptor(d)) {
				continue
			}
			sm, err := w.manifest(ctx, d.Digest, w.j.f.keepArtifact)
			if err != nil {
				return fmt.Errorf("referrer %s of %s: %w", d.Digest, s, err)
			}
			if !sm.Stored || !w.j.f.keepArtifact(sm.Parsed) {
				continue
			}
			if err := w.contents(ctx, sm.Parsed, 0, &next); err != nil {
				return err
			}
			w.rep.Referrers++
			next = append(next, d.Digest)
		}
		if err := w.referrers(ctx, next, depth+1); err != nil {
			return err
		}
	}
	return nil
}
