// Package syncer is active sync: it keeps the repositories of ActiveSync
// cache rules current ahead of pulls. A run lists the upstream's tags,
// keeps those the rule's filters select, asks the upstream with a HEAD
// (free on Docker Hub) what each tag points at, and fetches only new and
// moved tags, through the cache's one fetch-verify-store path. Tags deleted
// upstream stay. Runs are scheduled per rule (at once when a rule is new or
// changed, then every Interval), one replica at a time per rule (a lease
// row in the metadata store), and resume after a restart without fetching
// again what is already stored.
package syncer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/upstream"
)

// Fetcher is the cache as the syncer uses it: every byte the syncer stores
// goes through it.
type Fetcher interface {
	SyncManifest(ctx context.Context, reg string, t cache.Target, d digest.Digest, keep func(*oci.Manifest) bool) (cache.SyncedManifest, error)
	Prefetch(ctx context.Context, reg string, t cache.Target, d digest.Digest) (cache.Status, error)
	TagManifest(ctx context.Context, reg, repo, tag string, d digest.Digest) error
}

// Resolver maps repositories to cache targets (cache.RuleSet).
type Resolver interface {
	Resolve(ctx context.Context, registry, repo, ns string) (cache.Target, bool, error)
	TargetFor(registry string, r rules.Rule, repo string) (cache.Target, bool)
}

// Upstream is the upstream client as the syncer uses it directly: for what
// decides what to fetch (listings, HEADs), never for storing.
type Upstream interface {
	Tags(ctx context.Context, r upstream.Repo, fn func(page []string) error) error
	HeadManifest(ctx context.Context, r upstream.Repo, ref string) (upstream.Descriptor, error)
	Referrers(ctx context.Context, r upstream.Repo, subject digest.Digest, artifactType string) ([]oci.Descriptor, error)
	RateLimit(credKey, host string) (upstream.RateLimit, bool)
}

// Store is the metadata store: rules, repositories and tags, and the sync
// tables (leases, runs, per-tag state).
type Store interface {
	GetCacheRule(ctx context.Context, registry, name string) (rules.Rule, error)
	SetCacheRuleSyncStatus(ctx context.Context, registry, name string, st rules.SyncStatus) error
	ActiveSyncRules(ctx context.Context) ([]metadata.RuleRef, error)
	ListRepositories(ctx context.Context, registry, last string, n int) ([]string, bool, error)
	GetTag(ctx context.Context, registry, repo, tag string) (metadata.Tag, error)
	AcquireSyncLease(ctx context.Context, registry, rule, holder string, ttl time.Duration) (bool, error)
	ReleaseSyncLease(ctx context.Context, registry, rule, holder string) error
	GetSyncRun(ctx context.Context, registry, rule string) (metadata.SyncRun, error)
	PutSyncRun(ctx context.Context, r metadata.SyncRun) error
	GetSyncTag(ctx context.Context, registry, rule, repo, tag string) (metadata.SyncTag, error)
	PutSyncTag(ctx context.Context, st metadata.SyncTag) error
	SyncTagErrors(ctx context.Context, registry, rule string, n int) ([]metadata.SyncTag, error)
	CountSyncTagErrors(ctx context.Context, registry, rule string) (int, error)
	// GetRateLimit is the last rate-limit observation any replica recorded.
	GetRateLimit(ctx context.Context, source string) (metadata.RateLimit, error)
}

// Options configure a Syncer.
type Options struct {
	Cache    Fetcher  // required: *cache.Cache
	Rules    Resolver // required: *cache.RuleSet
	Store    Store    // required: metadata.Store
	Upstream Upstream // required: *upstream.Client (the one the cache uses)
	Logger   *slog.Logger
	// Registerer receives the arca_sync_* metrics (nil: a private registry).
	Registerer prometheus.Registerer
	// Interval between runs of a rule (default 12h, the acrcache README's).
	Interval time.Duration
	// RetryFailed is the wait after a failed run (default min(Interval, 1h)).
	RetryFailed time.Duration
	// Poll is how often Run looks for due rules (default 30s); Trigger
	// wakes it at once.
	Poll time.Duration
	// Concurrency bounds concurrent upstream requests per upstream host,
	// across all rules this replica syncs (default 4).
	Concurrency int
	// MinRateLimitRemaining defers a run while the upstream's last
	// ratelimit-remaining is below it (default 10; negative: never).
	MinRateLimitRemaining int
	// LeaseTTL is how long a rule's lease lasts unless renewed (default 2m);
	// a replica that dies mid-run holds the rule at most this long.
	LeaseTTL time.Duration
	// MaxRules bounds the rules this replica syncs at once (default 2).
	MaxRules int
	// Holder names this replica in lease rows (default host-pid-random).
	Holder string
	// Runs, if set, is told of every finished run (the per-rule history
	// of the portal's statistics: *stats.Recorder).
	Runs RunRecorder
}

// RunRecorder counts finished runs per rule.
type RunRecorder interface {
	SyncRun(registry, rule, result string)
}

// Syncer runs active sync. It is safe for concurrent use.
type Syncer struct {
	cache   Fetcher
	rules   Resolver
	store   Store
	up      Upstream
	log     *slog.Logger
	metrics *metrics
	limits  *limiter
	opts    Options

	wake chan struct{}

	mu        sync.Mutex
	triggered map[string]bool // ruleKey -> sync soon
	running   map[string]bool // ruleKey -> a run is going on here
}

// New returns a Syncer.
func New(o Options) (*Syncer, error) {
	if o.Cache == nil || o.Rules == nil || o.Store == nil || o.Upstream == nil {
		return nil, errors.New("syncer: Cache, Rules, Store and Upstream are required")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	if o.Interval <= 0 {
		o.Interval = 12 * time.Hour
	}
	if o.RetryFailed <= 0 {
		o.RetryFailed = min(o.Interval, time.Hour)
	}
	if o.Poll <= 0 {
		o.Poll = 30 * time.Second
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.MinRateLimitRemaining == 0 {
		o.MinRateLimitRemaining = 10
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Minute
	}
	if o.MaxRules <= 0 {
		o.MaxRules = 2
	}
	if o.Holder == "" {
		o.Holder = DefaultHolder()
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("syncer: %w", err)
	}
	return &Syncer{
		cache: o.Cache, rules: o.Rules, store: o.Store, up: o.Upstream, log: o.Logger.With("component", "syncer"),
		metrics: m, limits: newLimiter(o.Concurrency), opts: o,
		wake: make(chan struct{}, 1), triggered: map[string]bool{}, running: map[string]bool{},
	}, nil
}

// DefaultHolder names this process in lease rows: host, pid and a random part.
func DefaultHolder() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

func newRunID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
