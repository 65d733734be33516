// Package cache serves repositories backed by cache rules: content present
// locally is served from the store; missing content is fetched from the
// rule's upstream through one streaming, verifying, coalescing path, and
// stored as it is served. Tags are revalidated against the upstream with a
// HEAD (free on Docker Hub) once they are older than a configurable
// interval, and served stale when the upstream fails.
package cache

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"

	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/upstream"
)

// Status says where an answer came from (the X-Arca-Cache header).
type Status string

// Statuses.
const (
	Hit       Status = "hit"       // from local content
	Miss      Status = "miss"      // fetched from upstream by this request
	Stale     Status = "stale"     // local content served because the upstream failed
	Coalesced Status = "coalesced" // joined a fetch another request started
)

// Target is a repository served through a cache rule.
type Target struct {
	Rule     string        // rule name, for messages and metrics
	Repo     string        // our repository (the rule's target side)
	Upstream upstream.Repo // where content comes from
}

// Upstream is the upstream client as the cache uses it.
type Upstream interface {
	HeadManifest(ctx context.Context, r upstream.Repo, ref string) (upstream.Descriptor, error)
	GetManifest(ctx context.Context, r upstream.Repo, ref string) (*upstream.Manifest, error)
	GetBlob(ctx context.Context, r upstream.Repo, d digest.Digest) (io.ReadCloser, int64, error)
	HeadBlob(ctx context.Context, r upstream.Repo, d digest.Digest) (int64, error)
	Referrers(ctx context.Context, r upstream.Repo, subject digest.Digest, artifactType string) ([]oci.Descriptor, error)
	Tags(ctx context.Context, r upstream.Repo, fn func(page []string) error) error
}

// Blobs is the blob store as the cache uses it.
type Blobs interface {
	content.Blobs
	Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error)
}

// Meta is the metadata store as the cache uses it.
type Meta interface {
	content.Index
	BlobSize(ctx context.Context, registry, repo string, d digest.Digest) (int64, error)
	GetManifest(ctx context.Context, registry, repo string, d digest.Digest) (metadata.Manifest, error)
	GetTag(ctx context.Context, registry, repo, tag string) (metadata.Tag, error)
	TouchTag(ctx context.Context, registry, repo, tag string) error
	Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]metadata.Referrer, error)
	ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error)
}

// Options configure a Cache.
type Options struct {
	Blobs    Blobs
	Meta     Meta
	Upstream Upstream
	Logger   *slog.Logger
	// Revalidate is how old a cached tag may be before a pull checks the
	// upstream again (default 5 minutes, ACR's documented maximum delay).
	Revalidate time.Duration
	// FetchTimeout bounds one upstream blob transfer, which goes on even
	// when the client that started it leaves (default 1 hour).
	FetchTimeout time.Duration
	Registerer   prometheus.Registerer
}

// Cache is safe for concurrent use. Coalescing state is per process:
// replicas each fetch at most once per blob.
type Cache struct {
	blobs      Blobs
	meta       Meta
	up         Upstream
	content    *content.Store
	log        *slog.Logger
	revalidate time.Duration
	timeout    time.Duration
	metrics    *metrics

	mu       sync.Mutex
	inflight map[digest.Digest]*fetch
	group    singleflight.Group // manifests and tag revalidation
	tagPages tagSnapshots       // upstream tag lists, for follow-up pages
	wg       sync.WaitGroup     // detached fetches, for Close
}

// New returns a Cache.
func New(o Options) *Cache {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Revalidate == 0 {
		o.Revalidate = 5 * time.Minute
	}
	if o.FetchTimeout == 0 {
		o.FetchTimeout = time.Hour
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	return &Cache{
		blobs: o.Blobs, meta: o.Meta, up: o.Upstream, log: o.Logger,
		content:    &content.Store{Blobs: o.Blobs, Index: o.Meta},
		revalidate: o.Revalidate, timeout: o.FetchTimeout,
		metrics:  newMetrics(o.Registerer),
		inflight: map[digest.Digest]*fetch{},
	}
}

// Wait blocks until detached fetches finish (tests, shutdown).
func (c *Cache) Wait() { c.wg.Wait() }

type metrics struct {
	requests      *prometheus.CounterVec
	bytesUpstream prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_cache_requests_total",
			Help: "Requests for cached repositories by kind (manifest, blob, tags) and result (hit, miss, stale, coalesced, error).",
		}, []string{"kind", "result"}),
		bytesUpstream: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arca_cache_fetched_bytes_total", Help: "Blob bytes fetched from upstreams into the cache.",
		}),
	}
	reg.MustRegister(m.requests, m.bytesUpstream)
	return m
}

func (c *Cache) count(kind string, s Status) {
	c.metrics.requests.WithLabelValues(kind, string(s)).Inc()
}
