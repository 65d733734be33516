package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// Store is what eviction reads and changes.
type Store interface {
	CachedItems(ctx context.Context, registry string, before time.Time, after metadata.CachedCursor, n int) ([]metadata.CachedItem, error)
	EvictCached(ctx context.Context, registry string, it metadata.CachedItem, dryRun bool) (int64, error)
	RegistryUsage(ctx context.Context, registry string) ([]metadata.RepoUsage, error)
	GetRegistrySettings(ctx context.Context, registry string) (metadata.RegistrySettings, error)
	ListCacheRules(ctx context.Context, registry string) ([]rules.Rule, error)
	SyncKeptManifests(ctx context.Context, registry, rule string, referrers bool) ([]metadata.ManifestKey, error)
	AcquireSyncLease(ctx context.Context, registry, rule, holder string, ttl time.Duration) (bool, error)
	ReleaseSyncLease(ctx context.Context, registry, rule, holder string) error
}

// Reasons content is evicted (the metric's reason label).
const (
	ReasonRetention = "retention"
	ReasonQuota     = "quota"
	ReasonPurge     = "purge"
)

// leaseName is the sync-lease key of a registry's eviction pass: not a
// valid cache rule name, so it never shares a rule's lease.
const leaseName = "$eviction"

// pageSize is how many items one CachedItems query lists.
const pageSize = 500

// maxListed bounds the items a Result names (counts and bytes cover all).
const maxListed = 100

// Result is what an eviction pass took away (or, dry, would take).
type Result struct {
	DryRun    bool
	Manifests int
	Blobs     int   // blob links no manifest referenced
	Bytes     int64 // bytes the repositories no longer hold
	// Items names the first evicted items (at most maxListed).
	Items []metadata.CachedItem
	// More says Items is cut short.
	More bool
}

func (r *Result) add(it metadata.CachedItem, freed int64) {
	if it.Kind == metadata.PullManifest {
		r.Manifests++
	} else {
		r.Blobs++
	}
	r.Bytes += freed
	if len(r.Items) < maxListed {
		it.Size = freed
		r.Items = append(r.Items, it)
	} else {
		r.More = true
	}
}

// Evictor evicts cached content.
type Evictor struct {
	store  Store
	log    *slog.Logger
	now    func() time.Time
	holder string

	items *prometheus.CounterVec
	bytes *prometheus.CounterVec
}

// NewEvictor returns an Evictor; holder names this replica in leases.
func NewEvictor(store Store, reg prometheus.Registerer, log *slog.Logger, holder string, now func() time.Time) (*Evictor, error) {
	if store == nil || reg == nil || holder == "" {
		return nil, errors.New("lifecycle: store, registerer and holder are required")
	}
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	e := &Evictor{store: store, log: log, now: now, holder: holder,
		items: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_evicted_items_total",
			Help: "Cached items evicted (kind manifest: with its tags; blob: a link no manifest referenced), by registry, reason (retention, quota, purge) and kind.",
		}, []string{"registry", "reason", "kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_evicted_bytes_total",
			Help: "Bytes cached repositories no longer hold after eviction, by registry and reason (garbage collection reclaims the blobs no repository links).",
		}, []string{"registry", "reason"}),
	}
	for _, c := range []prometheus.Collector{e.items, e.bytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// pass is one walk over a registry's cached content, least recently used
// first: pick chooses what to evict, done stops the walk.
type pass struct {
	registry, reason string
	before           time.Time
	dryRun           bool
	pick             func(it metadata.CachedItem, r *rules.Rule) bool
	done             func(res *Result) bool
}

func (e *Evictor) run(ctx context.Context, p pass) (Result, error) {
	res := Result{DryRun: p.dryRun}
	list, err := e.store.ListCacheRules(ctx, p.registry)
	if err != nil {
		return res, err
	}
	ix := rules.NewIndex(list)
	var cursor metadata.CachedCursor
	for {
		page, err := e.store.CachedItems(ctx, p.registry, p.before, cursor, pageSize)
		if err != nil {
			return res, err
		}
		for _, it := range page {
			if p.done != nil && p.done(&res) {
				return res, nil
			}
			r, _, _ := ix.Match(it.Repo)
			if !p.pick(it, r) {
				continue
			}
			freed, err := e.store.EvictCached(ctx, p.registry, it, p.dryRun)
			if errors.Is(err, metadata.ErrNotFound) || errors.Is(err, metadata.ErrPushed) {
				continue // pulled again, referenced again, or pushed to meanwhile
			}
			if err != nil {
				return res, fmt.Errorf("evict %s@%s: %w", it.Repo, it.Digest, err)
			}
			res.add(it, freed)
			if !p.dryRun {
				e.items.WithLabelValues(p.registry, p.reason, it.Kind).Inc()
				e.bytes.WithLabelValues(p.registry, p.reason).Add(float64(freed))
				e.log.Debug("evicted", "registry", p.registry, "reason", p.reason, "repo", it.Repo, "kind", it.Kind, "digest", it.Digest, "bytes", freed)
			}
		}
		if len(page) < pageSize {
			return res, nil
		}
		cursor = page[len(page)-1].Cursor()
	}
}

// Retention evicts content of rules with retentionDays that was not
// pulled for that many days. What a rule in ActiveSync keeps current is
// exempt while it is in ActiveSync (the manifests its tracked tags point
// at, their children and, when it syncs referrers, their referrers: sync
// would fetch them again at its next run); the rest of such a rule's
// content (tags clients pulled through that sync does not track, or its
// filters exclude) ages out like any other rule's.
func (e *Evictor) Retention(ctx context.Context, registry string) (Result, error) {
	list, err := e.store.ListCacheRules(ctx, registry)
	if err != nil {
		return Result{}, err
	}
	shortest := 0
	// kept: per ActiveSync rule (by name, folded), repo@digest of what its
	// sync keeps current.
	kept := map[string]map[string]bool{}
	for _, r := range list {
		if r.RetentionDays <= 0 {
			continue
		}
		if shortest == 0 || r.RetentionDays < shortest {
			shortest = r.RetentionDays
		}
		if r.Mode() != rules.ActiveSync {
			continue
		}
		ks, err := e.store.SyncKeptManifests(ctx, registry, r.Name, strings.EqualFold(r.SyncReferrers, "Enabled"))
		if err != nil {
			return Result{}, err
		}
		set := make(map[string]bool, len(ks))
		for _, k := range ks {
			set[k.Repo+"@"+k.Digest.String()] = true
		}
		kept[strings.ToLower(r.Name)] = set
	}
	if shortest == 0 {
		return Result{}, nil
	}
	now := e.now()
	return e.run(ctx, pass{registry: registry, reason: ReasonRetention, before: now.Add(-days(shortest)),
		pick: func(it metadata.CachedItem, r *rules.Rule) bool {
			if r == nil || r.RetentionDays <= 0 || !it.LastUsed.Before(now.Add(-days(r.RetentionDays))) {
				return false
			}
			if r.Mode() == rules.ActiveSync && it.Kind == metadata.PullManifest {
				return !kept[strings.ToLower(r.Name)][it.Repo+"@"+it.Digest.String()]
			}
			return true
		}})
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

// CachedBytes is what registry's repositories without pushed content hold.
func CachedBytes(us []metadata.RepoUsage) (cached, pushed int64) {
	for _, u := range us {
		if u.Pushed {
			pushed += u.Bytes()
		} else {
			cached += u.Bytes()
		}
	}
	return cached, pushed
}

// Quota evicts cached content, least recently pulled first, until the
// registry's cached bytes are within its cache quota. Every cached item
// counts, ActiveSync rules' too: the quota is a bound on disk.
func (e *Evictor) Quota(ctx context.Context, registry string) (Result, error) {
	set, err := e.store.GetRegistrySettings(ctx, registry)
	if err != nil || set.CacheQuota <= 0 {
		return Result{}, err
	}
	us, err := e.store.RegistryUsage(ctx, registry)
	if err != nil {
		return Result{}, err
	}
	cached, _ := CachedBytes(us)
	if cached <= set.CacheQuota {
		return Result{}, nil
	}
	return e.run(ctx, pass{registry: registry, reason: ReasonQuota, before: e.now().Add(time.Hour),
		pick: func(metadata.CachedItem, *rules.Rule) bool { return true },
		done: func(res *Result) bool { return cached-res.Bytes <= set.CacheQuota }})
}

// Purge evicts rule's cached content not pulled for olderThan (0: all of
// it), or with dryRun reports what it would evict (an estimate: a blob
// shared by several manifests that would go counts with none of them).
func (e *Evictor) Purge(ctx context.Context, registry, rule string, olderThan time.Duration, dryRun bool) (Result, error) {
	return e.run(ctx, pass{registry: registry, reason: ReasonPurge, before: e.now().Add(-olderThan), dryRun: dryRun,
		pick: func(_ metadata.CachedItem, r *rules.Rule) bool { return r != nil && strings.EqualFold(r.Name, rule) }})
}

// Init exports the eviction counters of registries at zero, so that
// alerts and rates see them before the first eviction.
func (e *Evictor) Init(registries []string) {
	for _, reg := range registries {
		for _, reason := range []string{ReasonRetention, ReasonQuota, ReasonPurge} {
			e.bytes.WithLabelValues(reg, reason)
			for _, kind := range []string{metadata.PullManifest, metadata.PullBlob} {
				e.items.WithLabelValues(reg, reason, kind)
			}
		}
	}
}

// RunOnce runs retention and then the quota on each registry whose
// eviction lease this replica gets (one replica at a time per registry).
func (e *Evictor) RunOnce(ctx context.Context, registries []string, leaseTTL time.Duration) {
	e.Init(registries)
	for _, reg := range registries {
		got, err := e.store.AcquireSyncLease(ctx, reg, leaseName, e.holder, leaseTTL)
		if err != nil {
			e.log.Warn("eviction: lease", "registry", reg, "err", err)
			continue
		}
		if !got {
			continue
		}
		for _, step := range []struct {
			reason string
			fn     func(context.Context, string) (Result, error)
		}{{ReasonRetention, e.Retention}, {ReasonQuota, e.Quota}} {
			res, err := step.fn(ctx, reg)
			if err != nil {
				e.log.Warn("eviction failed", "registry", reg, "reason", step.reason, "err", err)
				continue
			}
			if res.Manifests+res.Blobs > 0 {
				e.log.Info("evicted cached content", "registry", reg, "reason", step.reason,
					"manifests", res.Manifests, "blobs", res.Blobs, "bytes", res.Bytes)
			}
		}
		if err := e.store.ReleaseSyncLease(ctx, reg, leaseName, e.holder); err != nil {
			e.log.Warn("eviction: release lease", "registry", reg, "err", err)
		}
	}
}

// Run evicts every interval until ctx ends.
func (e *Evictor) Run(ctx context.Context, interval time.Duration, registries func() []string) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// The lease outlives a pass by far; a crashed holder's expires.
			e.RunOnce(ctx, registries(), max(interval, 10*time.Minute))
		}
	}
}
