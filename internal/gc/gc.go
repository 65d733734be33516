// Package gc reclaims what nothing references any more: blobs (rows and
// bytes) that no repository links and no manifest references, untagged
// manifests of registries whose retention policy asks for it, and
// abandoned upload sessions (rows and staged parts). It runs online, one
// collector at a time across replicas (a lease in the metadata store), and
// deletes a blob only after it was seen unreferenced for a grace period;
// the invariant is written down in docs/architecture.md.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/metadata"
)

// Store is the metadata store as garbage collection needs it.
type Store interface {
	GCBlobs(ctx context.Context, after digest.Digest, n int) ([]metadata.GCBlob, bool, error)
	MarkBlobs(ctx context.Context, ds []digest.Digest, at time.Time) (int, error)
	ClaimBlobs(ctx context.Context, ds []digest.Digest, markedBefore, at time.Time) ([]metadata.BlobRef, error)
	ClaimOrphans(ctx context.Context, refs []metadata.BlobRef, at time.Time) ([]metadata.BlobRef, error)
	KnownBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error)
	ForgetBlobs(ctx context.Context, ds []digest.Digest, claimedAt time.Time) (int, error)
	UntaggedManifests(ctx context.Context, registry string, before time.Time, after metadata.ManifestKey, n int) ([]metadata.ManifestKey, bool, error)
	DeleteUntaggedManifest(ctx context.Context, registry, repo string, d digest.Digest, before time.Time) (bool, error)
	GetRetentionPolicy(ctx context.Context, registry string) (metadata.RetentionPolicy, error)
	EnabledRetentionPolicies(ctx context.Context) ([]metadata.RetentionPolicy, error)
	AcquireSyncLease(ctx context.Context, registry, rule, holder string, ttl time.Duration) (bool, error)
	ReleaseSyncLease(ctx context.Context, registry, rule, holder string) error
	UploadsBefore(ctx context.Context, cutoff time.Time) ([]metadata.UploadRef, error)
	DeleteUpload(ctx context.Context, id string) error
	content.Uploads
}

// ErrBusy: another collector (here or on another replica) is running.
var ErrBusy = errors.New("garbage collection is already running")

// The lease is a sync lease under a registry name no registry has.
const (
	leaseRegistry = ""
	leaseName     = "gc"
	// leaseTTL bounds how long a killed collector holds GC off. Runs
	// overlapping after a lease expired under a slow page stay safe:
	// claims are conditional and re-claimable, deletions idempotent.
	leaseTTL = 30 * time.Second
)

// Options configure a Collector.
type Options struct {
	// Grace is how long a blob must stay unreferenced before it is
	// deleted: longer than the longest pull of a blob, and than a writer
	// takes from preparing a blob to linking it (a commit).
	Grace time.Duration
	// UploadMaxAge is how old an upload session's parts get before an
	// abandoned session is purged.
	UploadMaxAge time.Duration
	// Holder names this collector in the lease (unique per process).
	Holder string
	Logger *slog.Logger
	// Observe, if set, is told of every run's result (metrics).
	Observe func(Result, error)
	// PageSize is how many rows are read and changed at a time (default 500).
	PageSize int
}

// Collector runs garbage collection.
type Collector struct {
	meta  Store
	blobs blobstore.Backend
	opts  Options
	log   *slog.Logger
	// uploadsMu: the server's upload janitor and a full run may purge
	// uploads at once in one process; once at a time is enough.
	uploadsMu sync.Mutex
}

// New returns a collector over meta and blobs.
func New(meta Store, blobs blobstore.Backend, opts Options) (*Collector, error) {
	if meta == nil || blobs == nil {
		return nil, errors.New("gc: metadata and blob stores are required")
	}
	if opts.Grace <= 0 {
		return nil, fmt.Errorf("gc: grace period must be positive, got %s", opts.Grace)
	}
	if opts.UploadMaxAge <= 0 {
		return nil, fmt.Errorf("gc: upload max age must be positive, got %s", opts.UploadMaxAge)
	}
	if opts.Holder == "" {
		return nil, errors.New("gc: a lease holder name is required")
	}
	if opts.PageSize <= 0 {
		opts.PageSize = 500
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Collector{meta: meta, blobs: blobs, opts: opts, log: opts.Logger}, nil
}

// Request is one run.
type Request struct {
	// Registry limits the run to what one registry owns: its untagged
	// manifests (under its retention policy) and its abandoned upload
	// sessions. "" is every registry, and the whole store.
	Registry string
	// StoreWide adds, to a run limited to a Registry, the phases over
	// what registries share: blob rows, orphaned bytes, and staged parts
	// no session owns. Only callers with authority over every registry
	// may ask for it (the management API checks). A run with no Registry
	// always includes them.
	StoreWide bool
	// DryRun counts what would be reclaimed and changes nothing.
	DryRun bool
	// Reclaim makes a store-wide run wait out the grace period after
	// marking, then sweep the blob rows again: what it found unreferenced
	// and still is goes in this run, not the next. (The same invariant: a
	// blob is deleted a grace period after its mark.) Not with DryRun.
	Reclaim bool
	// Progress, if set, is told what the run did so far, as each phase
	// starts (the first call: the run holds the lease) and after each page.
	Progress func(Result)
}

// Result is what a run reclaimed (or, in a dry run, would reclaim).
type Result struct {
	Phase  string `json:"phase"` // "uploads", "manifests", "blobs", "orphans", "done"
	DryRun bool   `json:"dryRun"`
	// Registry is the registry the run was limited to ("": all).
	Registry string `json:"registry,omitempty"`
	// Manifests: untagged manifests deleted under a retention policy.
	Manifests     int64 `json:"manifests"`
	ManifestBytes int64 `json:"manifestBytes"`
	// Uploads: abandoned upload sessions forgotten; UploadParts: their
	// staged parts deleted.
	Uploads     int64 `json:"uploads"`
	UploadParts int64 `json:"uploadParts"`
	// Store is what the store-wide phases reclaimed; nil when they did
	// not run (a registry's run without StoreWide).
	Store *StoreResult `json:"store,omitempty"`
	// GraceUntil: a Reclaim run waits (phase "grace") until then.
	GraceUntil armtime.Time  `json:"graceUntil,omitzero"`
	Duration   time.Duration `json:"-"`
	Seconds    float64       `json:"seconds"`
}

// StoreResult is what the store-wide phases reclaimed. Blobs are shared
// by every registry of the store, so these are counts over the store,
// never attributed to a registry.
type StoreResult struct {
	// Blobs and BlobBytes: blob rows and bytes deleted (manifests' bytes
	// included: they are blobs too).
	Blobs     int64 `json:"blobs"`
	BlobBytes int64 `json:"blobBytes"`
	// Orphans: blobs in the blob store that metadata never recorded (a
	// crash between commit and record), included in Blobs and BlobBytes.
	Orphans int64 `json:"orphans"`
	// Marked blobs (and their bytes) were seen unreferenced for the first
	// time: a run after the grace period deletes them if they stay so.
	Marked      int64 `json:"marked"`
	MarkedBytes int64 `json:"markedBytes"`
	// StrayParts: staged parts older than the upload age that no upload
	// session owns (a session forgotten before its parts were deleted).
	StrayParts int64 `json:"strayParts"`
}

// Run collects garbage once. It returns ErrBusy when another collector
// holds the lease.
func (c *Collector) Run(ctx context.Context, req Request) (res Result, err error) {
	start := time.Now()
	res.DryRun, res.Registry = req.DryRun, req.Registry
	storeWide := req.Registry == "" || req.StoreWide
	if storeWide {
		res.Store = &StoreResult{}
	}
	defer func() {
		res.Duration = time.Since(start)
		res.Seconds = res.Duration.Seconds()
		if c.opts.Observe != nil {
			c.opts.Observe(res, err)
		}
	}()
	got, err := c.meta.AcquireSyncLease(ctx, leaseRegistry, leaseName, c.opts.Holder, leaseTTL)
	if err != nil {
		return res, fmt.Errorf("gc lease: %w", err)
	}
	if !got {
		return res, ErrBusy
	}
	defer func() {
		// Released even when ctx ended (shutdown), so another replica
		// need not wait for the lease to expire.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = c.meta.ReleaseSyncLease(rctx, leaseRegistry, leaseName, c.opts.Holder)
	}()
	r := &run{c: c, req: req, res: &res, start: start, leaseAt: time.Now()}
	type phase struct {
		name string
		fn   func(context.Context) error
	}
	phases := []phase{{"uploads", r.uploads}, {"manifests", r.manifests}}
	if storeWide {
		phases = append(phases, phase{"blobs", r.blobRows})
		if req.Reclaim && !req.DryRun {
			phases = append(phases, phase{"grace", r.waitGrace}, phase{"reclaim", r.blobRows})
		}
		phases = append(phases, phase{"orphans", r.orphans})
	}
	for _, p := range phases {
		res.Phase = p.name
		r.progress()
		if err := p.fn(ctx); err != nil {
			return res, fmt.Errorf("gc %s: %w", p.name, err)
		}
	}
	res.Phase = "done"
	r.progress()
	attrs := []any{"registry", req.Registry, "dry_run", req.DryRun, "manifests", res.Manifests, "uploads", res.Uploads,
		"upload_parts", res.UploadParts, "duration", time.Since(start)}
	if st := res.Store; st != nil {
		attrs = append(attrs, "blobs", st.Blobs, "blob_bytes", st.BlobBytes, "orphans", st.Orphans, "marked", st.Marked, "stray_parts", st.StrayParts)
	}
	c.log.Info("garbage collected", attrs...)
	return res, nil
}

type run struct {
	c       *Collector
	req     Request
	res     *Result
	start   time.Time
	leaseAt time.Time
	// lastMark is when the blob phase last marked rows (zero: none).
	lastMark time.Time
}

// progress hands the caller a snapshot: the run goes on changing its
// result (Store included) while the caller reads what it was given.
func (r *run) progress() {
	if r.req.Progress != nil {
		snap := *r.res
		if r.res.Store != nil {
			store := *r.res.Store
			snap.Store = &store
		}
		r.req.Progress(snap)
	}
}

// renew keeps the lease while the run goes on (every page; it is written
// only every quarter of its life). A run that lost it stops.
func (r *run) renew(ctx context.Context) error {
	if time.Since(r.leaseAt) < leaseTTL/4 {
		return nil
	}
	got, err := r.c.meta.AcquireSyncLease(ctx, leaseRegistry, leaseName, r.c.opts.Holder, leaseTTL)
	if err != nil {
		return fmt.Errorf("renew lease: %w", err)
	}
	if !got {
		return ErrBusy
	}
	r.leaseAt = time.Now()
	return nil
}

// uploads purges abandoned upload sessions (see PurgeUploads).
func (r *run) uploads(ctx context.Context) error {
	p, err := r.c.purgeUploads(ctx, r.req.Registry, r.res.Store != nil, r.req.DryRun)
	r.res.UploadParts += int64(p.parts)
	r.res.Uploads += int64(p.sessions)
	if r.res.Store != nil {
		r.res.Store.StrayParts += int64(p.strays)
	}
	return err
}

// PurgeUploads forgets abandoned upload sessions and deletes staged parts
// older than UploadMaxAge; the server's upload janitor calls it more often
// than full runs happen. It returns how many parts (stray ones included)
// and sessions it purged.
func (c *Collector) PurgeUploads(ctx context.Context) (parts, sessions int, err error) {
	p, err := c.purgeUploads(ctx, "", true, false)
	return p.parts + p.strays, p.sessions, err
}

// purged counts an upload purge: the staged parts of sessions in scope,
// those sessions, and stale parts no session owns.
type purged struct{ parts, sessions, strays int }

// purgeUploads purges the abandoned sessions of registry ("": every
// registry) with their stale parts and, when strays, stale parts that no
// old session owns (which belong to no registry).
func (c *Collector) purgeUploads(ctx context.Context, registry string, strays, dryRun bool) (purged, error) {
	c.uploadsMu.Lock()
	defer c.uploadsMu.Unlock()
	var p purged
	cutoff := time.Now().Add(-c.opts.UploadMaxAge)
	// Sessions started before the cutoff, with the parts they recorded
	// (read before the parts are listed: a part recorded then is listed).
	old, err := c.meta.UploadsBefore(ctx, cutoff)
	if err != nil {
		return p, err
	}
	inScope := func(u metadata.UploadRef) bool { return registry == "" || strings.EqualFold(u.Registry, registry) }
	cs := &content.Store{Blobs: c.blobs, Uploads: c.meta}
	recorded := map[string][]string{} // sessions in scope
	owner := map[string]string{}      // part -> old session owning it
	for _, u := range old {
		if !inScope(u) && !strays {
			continue // only strays need to know other registries' parts
		}
		parts, err := cs.UploadParts(ctx, u.ID)
		if err != nil {
			continue
		}
		if inScope(u) {
			recorded[u.ID] = parts
		}
		for _, part := range parts {
			owner[part] = u.ID
		}
	}
	staged := map[string]bool{}
	var stale []string
	if err := c.blobs.ListStaged(ctx, func(id string, modified time.Time) error {
		_, ours := recorded[owner[id]]
		switch {
		case !modified.Before(cutoff):
			staged[id] = true
		case ours:
			stale = append(stale, id)
			p.parts++
		case owner[id] == "" && strays:
			stale = append(stale, id)
			p.strays++
		default:
			staged[id] = true // another registry's session's: not ours to purge
		}
		return nil
	}); err != nil {
		return p, fmt.Errorf("list staged parts: %w", err)
	}
	if !dryRun && len(stale) > 0 {
		if err := c.blobs.DeleteStaged(ctx, stale...); err != nil {
			return purged{}, fmt.Errorf("purge staged parts: %w", err)
		}
	}
	// An old session is abandoned when it recorded no bytes, or when a
	// part of it is gone (purged here or by another replica, lost in a
	// crash): it can never complete.
	for id, parts := range recorded {
		intact := len(parts) > 0
		for _, p := range parts {
			intact = intact && staged[p]
		}
		if intact {
			continue
		}
		if dryRun {
			p.sessions++
			continue
		}
		_ = cs.DiscardUpload(ctx, id)
		if c.meta.DeleteUpload(ctx, id) == nil {
			p.sessions++
		}
	}
	if !dryRun && (len(stale) > 0 || p.sessions > 0) {
		c.log.Info("purged abandoned uploads", "registry", registry, "staged_parts", len(stale), "sessions", p.sessions)
	}
	return p, nil
}

// maxPasses bounds the passes over untagged manifests: deleting an index
// (or a subject) makes its children (or referrers) eligible in the next.
const maxPasses = 8

// manifests deletes untagged manifests of the registries whose retention
// policy is enabled, created more than the policy's days ago.
func (r *run) manifests(ctx context.Context) error {
	var policies []metadata.RetentionPolicy
	if r.req.Registry != "" {
		p, err := r.c.meta.GetRetentionPolicy(ctx, r.req.Registry)
		if err != nil {
			return err
		}
		if p.Enabled {
			policies = append(policies, p)
		}
	} else {
		var err error
		if policies, err = r.c.meta.EnabledRetentionPolicies(ctx); err != nil {
			return err
		}
	}
	for _, p := range policies {
		before := r.start.Add(-time.Duration(p.Days) * 24 * time.Hour)
		for pass := 0; pass < maxPasses; pass++ {
			deleted, err := r.manifestPass(ctx, p.Registry, before)
			if err != nil {
				return err
			}
			// A dry run cannot see what a pass would make eligible.
			if deleted == 0 || r.req.DryRun {
				break
			}
		}
	}
	return nil
}

func (r *run) manifestPass(ctx context.Context, registry string, before time.Time) (int, error) {
	var after metadata.ManifestKey
	deleted := 0
	for {
		if err := r.renew(ctx); err != nil {
			return deleted, err
		}
		page, more, err := r.c.meta.UntaggedManifests(ctx, registry, before, after, r.c.opts.PageSize)
		if err != nil {
			return deleted, err
		}
		for _, m := range page {
			ok := r.req.DryRun
			if !ok {
				if ok, err = r.c.meta.DeleteUntaggedManifest(ctx, registry, m.Repo, m.Digest, before); err != nil {
					return deleted, err
				}
			}
			if ok {
				deleted++
				r.res.Manifests++
				r.res.ManifestBytes += m.Size
			}
		}
		r.progress()
		if !more || len(page) == 0 {
			return deleted, nil
		}
		after = page[len(page)-1]
	}
}

// blobRows pages through the blobs rows: deletes those marked
// unreferenced at least a grace period ago and unreferenced still (and
// finishes deletions a crashed run claimed), and marks those newly seen
// unreferenced.
func (r *run) blobRows(ctx context.Context) error {
	// Claimable: marked a grace period before this pass started (a Reclaim
	// run's second pass starts once its first pass's marks are that old).
	markedBefore := time.Now().Add(-r.c.opts.Grace)
	var after digest.Digest
	for {
		if err := r.renew(ctx); err != nil {
			return err
		}
		page, more, err := r.c.meta.GCBlobs(ctx, after, r.c.opts.PageSize)
		if err != nil {
			return err
		}
		var claim, mark []digest.Digest
		for _, b := range page {
			switch {
			case !b.DeletingAt.IsZero(): // a deletion a crashed run left
				claim = append(claim, b.Digest)
				if r.req.DryRun {
					r.res.Store.Blobs++
					r.res.Store.BlobBytes += b.Size
				}
			case b.Referenced && !b.MarkedAt.IsZero():
				mark = append(mark, b.Digest) // MarkBlobs clears it
			case b.Referenced:
			case b.MarkedAt.IsZero():
				mark = append(mark, b.Digest)
				if r.req.DryRun {
					r.res.Store.Marked++
					r.res.Store.MarkedBytes += b.Size
				}
			case b.MarkedAt.Before(markedBefore):
				claim = append(claim, b.Digest)
				if r.req.DryRun {
					r.res.Store.Blobs++
					r.res.Store.BlobBytes += b.Size
				}
			}
		}
		if !r.req.DryRun {
			claimAt := time.Now()
			claimed, err := r.c.meta.ClaimBlobs(ctx, claim, markedBefore, claimAt)
			if err != nil {
				return err
			}
			if err := r.deleteClaimed(ctx, claimed, claimAt, false); err != nil {
				return err
			}
			// Marked now, not at the run's start: a writer that prepared
			// a row before this page read it keeps a whole grace period.
			markAt := time.Now()
			n, err := r.c.meta.MarkBlobs(ctx, mark, markAt)
			if err != nil {
				return err
			}
			if n > 0 {
				r.lastMark = markAt
			}
			r.res.Store.Marked += int64(n)
		}
		r.progress()
		if !more || len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].Digest
	}
}

// waitGrace waits, holding the lease, until the last mark of the blob
// phase is a grace period old (nothing to wait for when it marked none).
func (r *run) waitGrace(ctx context.Context) error {
	if r.lastMark.IsZero() {
		return nil
	}
	until := r.lastMark.Add(r.c.opts.Grace + time.Millisecond)
	r.res.GraceUntil = armtime.Of(until)
	r.progress()
	for {
		wait := time.Until(until)
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(min(wait, leaseTTL/4))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		if err := r.renew(ctx); err != nil {
			return err
		}
	}
}

// deleteConcurrency is how many blob deletions are in flight at once.
const deleteConcurrency = 8

// deleteClaimed deletes the bytes of blobs claimed at claimAt, then the
// rows of those whose bytes are gone. The order is what makes a crash
// harmless: a crash leaves a claimed row (the next run finishes it),
// never a row whose bytes are gone unclaimed. Deletions still running
// at half the claim's life are abandoned (left claimed, for the next
// run), so that a writer taking an old claim over never races them.
func (r *run) deleteClaimed(ctx context.Context, claimed []metadata.BlobRef, claimAt time.Time, orphans bool) error {
	if len(claimed) == 0 {
		return nil
	}
	dctx, cancel := context.WithDeadline(ctx, claimAt.Add(metadata.ClaimTTL/2))
	defer cancel()
	gone := make([]bool, len(claimed))
	errs := make([]error, len(claimed))
	sem := make(chan struct{}, deleteConcurrency)
	var wg sync.WaitGroup
	for i, b := range claimed {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := r.c.blobs.Delete(dctx, b.Digest); err != nil {
				errs[i] = fmt.Errorf("delete blob %s: %w", b.Digest, err)
				return
			}
			gone[i] = true
		}()
	}
	wg.Wait()
	var ds []digest.Digest
	sizes := map[digest.Digest]int64{}
	for i, b := range claimed {
		if gone[i] {
			ds = append(ds, b.Digest)
			sizes[b.Digest] = b.Size
		}
	}
	// The rows go even if ctx ended meanwhile: their bytes are gone.
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer fcancel()
	if _, err := r.c.meta.ForgetBlobs(fctx, ds, claimAt); err != nil {
		return err
	}
	for _, d := range ds {
		r.res.Store.Blobs++
		r.res.Store.BlobBytes += sizes[d]
		if orphans {
			r.res.Store.Orphans++
		}
	}
	return errors.Join(errs...)
}

// orphans deletes committed blobs that have no row at all: a crash (or a
// writer older than garbage collection) between committing bytes and
// recording them. Writers record the row first (PrepareBlob), so bytes
// without a row are never about to be linked.
func (r *run) orphans(ctx context.Context) error {
	var batch []metadata.BlobRef
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		defer func() { batch = batch[:0] }()
		if err := r.renew(ctx); err != nil {
			return err
		}
		ds := make([]digest.Digest, len(batch))
		for i, b := range batch {
			ds[i] = b.Digest
		}
		known, err := r.c.meta.KnownBlobs(ctx, ds)
		if err != nil {
			return err
		}
		isKnown := map[digest.Digest]bool{}
		for _, d := range known {
			isKnown[d] = true
		}
		var unknown []metadata.BlobRef
		for _, b := range batch {
			if !isKnown[b.Digest] {
				unknown = append(unknown, b)
			}
		}
		if r.req.DryRun {
			for _, b := range unknown {
				r.res.Store.Blobs++
				r.res.Store.BlobBytes += b.Size
				r.res.Store.Orphans++
			}
			r.progress()
			return nil
		}
		claimAt := time.Now()
		claimed, err := r.c.meta.ClaimOrphans(ctx, unknown, claimAt)
		if err != nil {
			return err
		}
		err = r.deleteClaimed(ctx, claimed, claimAt, true)
		r.progress()
		return err
	}
	err := r.c.blobs.List(ctx, func(d digest.Digest, size int64) error {
		batch = append(batch, metadata.BlobRef{Digest: d, Size: size})
		if len(batch) >= r.c.opts.PageSize {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}
