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

	"github.com/arcacache/arca/internal/blobstore"
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

// Meta is the metadata store as the cache uses it.
type Meta interface {
	content.Index
	BlobSize(ctx context.Context, registry, repo string, d digest.Digest) (int64, error)
	// References reports whether a manifest of repo references d.
	References(ctx context.Context, registry, repo string, d digest.Digest) (bool, error)
	GetManifest(ctx context.Context, registry, repo string, d digest.Digest) (metadata.Manifest, error)
	GetTag(ctx context.Context, registry, repo, tag string) (metadata.Tag, error)
	TouchTag(ctx context.Context, registry, repo, tag string) error
	Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]metadata.Referrer, error)
	ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error)
}

// Options configure a Cache.
type Options struct {
	Blobs blobstore.Backend
	// SpoolDir holds the local copy of blobs being fetched into a backend
	// that cannot read a blob under construction (default os.TempDir()).
	SpoolDir string
	Meta     Meta
	Upstream Upstream
	Logger   *slog.Logger
	// Revalidate is how old a cached tag may be before a pull checks the
	// upstream again (default 5 minutes, ACR's documented maximum delay).
	Revalidate time.Duration
	// RevalidateTimeout is how long a pull waits for a tag's revalidation
	// before it serves the cached manifest (stale); the revalidation goes
	// on in the background (default 2s).
	RevalidateTimeout time.Duration
	// NegativeTTL is how long an upstream 404 for a digest is remembered
	// per source repository (default 30s; tags: at most Revalidate;
	// negative: off).
	NegativeTTL time.Duration
	// FetchTimeout bounds one upstream blob transfer, which goes on even
	// when the client that started it leaves (default 1 hour).
	FetchTimeout time.Duration
	Registerer   prometheus.Registerer
}

// Cache is safe for concurrent use. Fetches are coalesced in the process,
// and across replicas by fetch leases when it is part of a cluster
// (UseCluster).
type Cache struct {
	blobs      blobstore.Backend
	spoolDir   string
	meta       Meta
	up         Upstream
	content    *content.Store
	log        *slog.Logger
	revalidate time.Duration
	revalWait  time.Duration
	timeout    time.Duration
	metrics    *metrics
	negative   *negativeCache
	cluster    *Cluster // nil: a single node (see cluster.go)

	// base is the parent of detached fetches; abort cancels it when
	// shutdown cannot wait for them any longer.
	base  context.Context
	abort context.CancelFunc

	mu       sync.Mutex
	inflight map[fetchKey]*fetch
	closing  bool               // Shutdown began: no new fetches
	group    singleflight.Group // manifests and tag revalidation
	tagPages tagSnapshots       // upstream tag lists, for follow-up pages
	wg       sync.WaitGroup     // detached fetches
}

// New returns a Cache.
func New(o Options) *Cache {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Revalidate == 0 {
		o.Revalidate = 5 * time.Minute
	}
	if o.RevalidateTimeout <= 0 {
		o.RevalidateTimeout = 2 * time.Second
	}
	if o.NegativeTTL == 0 {
		o.NegativeTTL = 30 * time.Second
	}
	if o.FetchTimeout == 0 {
		o.FetchTimeout = time.Hour
	}
	if o.Registerer == nil {
		o.Registerer = prometheus.NewRegistry()
	}
	base, abort := context.WithCancel(context.Background())
	return &Cache{
		blobs: o.Blobs, spoolDir: o.SpoolDir, meta: o.Meta, up: o.Upstream, log: o.Logger,
		content:    &content.Store{Blobs: o.Blobs, Index: o.Meta},
		revalidate: o.Revalidate, revalWait: o.RevalidateTimeout, timeout: o.FetchTimeout,
		negative: newNegativeCache(o.NegativeTTL),
		metrics:  newMetrics(o.Registerer),
		base:     base, abort: abort,
		inflight: map[fetchKey]*fetch{},
	}
}

// Wait blocks until detached fetches finish (tests).
func (c *Cache) Wait() { c.wg.Wait() }

// Shutdown stops new upstream blob fetches, waits for those under way (a
// client may have left them: they fill the cache detached) until ctx ends,
// then aborts those still running, which store nothing. It logs which.
func (c *Cache) Shutdown(ctx context.Context) {
	c.mu.Lock()
	c.closing = true
	n := len(c.inflight)
	c.mu.Unlock()
	idle := make(chan struct{})
	go func() {
		c.wg.Wait()
		close(idle)
	}()
	if n > 0 {
		c.log.Info("shutting down: waiting for upstream blob fetches", "count", n)
	}
	select {
	case <-idle:
		if n > 0 {
			c.log.Info("upstream blob fetches finished", "count", n)
		}
		return
	case <-ctx.Done():
	}
	c.mu.Lock()
	var left []*fetch
	for _, f := range c.inflight {
		left = append(left, f)
	}
	c.mu.Unlock()
	c.abort()
	<-idle
	for _, f := range left {
		f.mu.Lock()
		got, err := f.avail, f.err
		f.mu.Unlock()
		if err == nil { // it committed before the abort reached it
			c.log.Info("upstream blob fetch finished", "upstream", f.key.host+"/"+f.key.path, "digest", f.key.d)
			continue
		}
		c.log.Warn("shutdown timeout: aborted upstream blob fetch; nothing stored", "upstream", f.key.host+"/"+f.key.path,
			"digest", f.key.d, "bytes_received", got, "err", err)
	}
}

type metrics struct {
	requests      *prometheus.CounterVec
	bytesUpstream prometheus.Counter
	peerFollows   prometheus.Counter
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
		peerFollows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "arca_cache_peer_follows_total", Help: "Blob fetches that read another replica's in-flight fetch instead of the upstream.",
		}),
	}
	reg.MustRegister(m.requests, m.bytesUpstream, m.peerFollows)
	return m
}

func (c *Cache) count(kind string, s Status) {
	c.metrics.requests.WithLabelValues(kind, string(s)).Inc()
}
