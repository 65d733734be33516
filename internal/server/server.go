// Package server assembles arca's HTTP server from its stores and handlers:
// the OCI data plane under /v2/, health and readiness, Prometheus metrics,
// and the management plane. It owns startup and graceful shutdown.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/arcacache/arca/internal/auth"
	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/egress"
	"github.com/arcacache/arca/internal/gc"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/mgmt"
	"github.com/arcacache/arca/internal/portal"
	"github.com/arcacache/arca/internal/registry"
	"github.com/arcacache/arca/internal/secrets"
	"github.com/arcacache/arca/internal/stats"
	"github.com/arcacache/arca/internal/syncer"
)

// Options configure a server. cmd/arca fills them from flags, env and file.
type Options struct {
	Addr    string
	DataDir string
	// Blobs is where blobs live: "" for the filesystem under DataDir, or
	// s3://BUCKET/PREFIX?endpoint=...&region=...&path-style=... (see
	// blobstore.ParseS3URL; credentials from the AWS environment).
	Blobs string
	// BlobRedirect, when > 0 and the blob backend presigns URLs (S3),
	// answers blob GETs with a redirect to a URL valid this long.
	BlobRedirect time.Duration
	// Metadata names the metadata store (metadata.Open): "" for the
	// embedded SQLite database under DataDir, or a postgres:// URL.
	Metadata        string
	RegistryName    string
	TLSCert         string
	TLSKey          string
	ShutdownTimeout time.Duration
	// PprofAddr, when set, serves net/http/pprof there (loopback only).
	PprofAddr string
	// UploadMaxAge is how long an abandoned upload is kept before purging.
	UploadMaxAge time.Duration
	// StorageMetricsMaxAge is how stale the arca_storage_* gauges may get.
	StorageMetricsMaxAge time.Duration
	Logger               *slog.Logger
	// AccessLog logs every request at info level (see accesslog.go).
	AccessLog bool
	// Ready, if set, receives the bound address once the server listens.
	Ready func(addr net.Addr)
	// Management configures the management plane (see mgmt.go).
	Management ManagementOptions
	// PullThrough configures rule-backed repositories (see pullthrough.go).
	PullThrough PullThroughOptions
	// Sync configures active sync (see sync.go).
	Sync SyncOptions
	// Limits bound clients, uploads and disk use (see resources.go).
	Limits LimitOptions
	// Lifecycle configures access tracking and eviction (see lifecycle.go).
	Lifecycle LifecycleOptions
	// GC configures garbage collection (see gc.go).
	GC GCOptions
	// ReadHeaderTimeout and IdleTimeout bound slow clients: the time to
	// send request headers, and an idle keep-alive connection's life.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// MetricsAddr, if set, serves /metrics on its own listener (say on a
	// private interface) instead of the main one.
	MetricsAddr string
	// MaxUploadsPerIdentity caps the open upload sessions of one
	// identity (<= 0: no cap).
	MaxUploadsPerIdentity int
	// UploadSessionLifetime is the longest an upload session may take
	// from its start (<= 0: no limit).
	UploadSessionLifetime time.Duration
	// AccessTokenTTL and RefreshTokenTTL are the lifetimes of issued
	// tokens (0: auth's defaults, 5 minutes and 24 hours).
	AccessTokenTTL  time.Duration
	RefreshTokenTTL time.Duration
	// InsecureOpen turns data-plane access control off (anyone may pull,
	// push and delete); refused unless Addr is a loopback address.
	InsecureOpen bool
	// TracerProvider, if set, traces requests (see tracing.go).
	TracerProvider trace.TracerProvider
	// Cluster configures running as one of several replicas (cluster.go).
	Cluster ClusterOptions
}

// Server is a running arca.
type Server struct {
	opts    Options
	log     *slog.Logger
	guard   *guard
	meta    metadata.Store
	blobs   blobstore.Backend
	syncer  *syncer.Syncer
	cache   *cache.Cache
	stats   *stats.Recorder
	life    *lifecycleParts
	mgmt    *mgmt.Handler
	handler http.Handler
	metrics http.Handler // set when MetricsAddr has its own listener
	access  *auth.Service
	regs    *mgmt.Registries
	gc      *gc.Collector
	// gcMetrics count what gc (and the upload janitor) reclaimed.
	gcMetrics *gcMetrics
	// replica names this process in lease rows (fetch and sync leases).
	replica string
	// onRegistryChange refreshes what the data plane caches of a registry.
	onRegistryChange func(registry string)
}

// New opens the stores under opts.DataDir and builds the handler tree.
func New(ctx context.Context, opts Options) (*Server, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	if opts.UploadMaxAge == 0 {
		opts.UploadMaxAge = 24 * time.Hour
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = 30 * time.Second
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 2 * time.Minute
	}
	if opts.PprofAddr != "" {
		if err := checkPprofAddr(opts.PprofAddr); err != nil {
			return nil, err
		}
	}
	if opts.GC.Grace == 0 {
		opts.GC.Grace = time.Hour
	}
	if opts.StorageMetricsMaxAge == 0 {
		opts.StorageMetricsMaxAge = time.Minute
	}
	if err := checkAdvertise(opts.Cluster.Advertise); err != nil {
		return nil, err
	}
	s := &Server{opts: opts, log: opts.Logger, replica: syncer.DefaultHolder()}
	if err := s.openStores(ctx); err != nil {
		return nil, err
	}
	if err := s.build(ctx); err != nil {
		s.meta.Close()
		return nil, err
	}
	return s, nil
}

// openStores opens the embedded blob and metadata stores under DataDir.
func (s *Server) openStores(ctx context.Context) error {
	if err := os.MkdirAll(s.opts.DataDir, 0o755); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	blobs, err := openBlobs(ctx, s.opts)
	if err != nil {
		return err
	}
	meta, err := metadata.Open(ctx, s.opts.Metadata, s.opts.DataDir)
	if err != nil {
		return err
	}
	s.blobs, s.meta = blobs, meta
	return nil
}

// openBlobs opens the blob backend opts.Blobs names.
func openBlobs(ctx context.Context, opts Options) (blobstore.Backend, error) {
	b, err := blobstore.Open(ctx, opts.Blobs, filepath.Join(opts.DataDir, "blobs"))
	if err != nil {
		return nil, err
	}
	if s3, ok := b.(*blobstore.S3); ok {
		opts.Logger.Info("blobs in S3", "bucket", s3.Bucket(), "prefix", s3.Prefix())
	}
	return b, nil
}

// build wires the pull-through cache, active sync, the management plane
// and the data plane into one handler.
func (s *Server) build(ctx context.Context) error {
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(promReg)
	promReg.MustRegister(newStorageCollector(s.meta, s.log, s.opts.StorageMetricsMaxAge))
	eg, err := egress.Parse(s.opts.PullThrough.UpstreamAllow)
	if err != nil {
		return err
	}
	res, err := secrets.New(secrets.Options{HTTPClient: egressClient(eg)})
	if err != nil {
		return fmt.Errorf("secrets: %w", err)
	}
	pt, err := s.newPullThrough(promReg, res, eg)
	if err != nil {
		return err
	}
	s.cache = pt.cache
	peers, err := s.useCluster(pt.cache)
	if err != nil {
		return err
	}
	if s.gc, err = s.newCollector(promReg); err != nil {
		return err
	}
	if s.life, err = s.newLifecycle(promReg); err != nil {
		return err
	}
	if s.stats, err = stats.New(s.meta, promReg, s.log, nil); err != nil {
		return err
	}
	if s.syncer, err = s.newSyncer(pt, promReg, s.stats); err != nil {
		return err
	}
	onChange := func(registry string) {
		pt.rules.Invalidate(registry)
		s.syncer.Trigger(registry, "")
	}
	mg, regs, err := s.management(ctx, res, loginChecker{secrets: res, up: pt.up}, syncAPI{s.syncer}, pt.health, pt, onChange)
	if err != nil {
		return err
	}
	access, err := s.newAccess(mg.Principals())
	if err != nil {
		return err
	}
	s.access = access
	s.mgmt = mg
	po, err := portal.New(portal.Options{API: mg, Identities: mg.Principals(), Sessions: s.meta, Stats: s.stats, Repos: s.meta, Describer: &content.Store{Blobs: s.blobs}, Logger: s.log})
	if err != nil {
		return err
	}
	s.regs, s.onRegistryChange = regs, pt.rules.Invalidate
	reg := registry.New(registry.Options{
		Blobs: s.blobs, Meta: s.meta, Logger: s.log, Registry: regs.ForRequest,
		Rules: pt.rules, Cache: pt.cache, MirrorNamespace: s.opts.PullThrough.MirrorNamespace,
		BlobRedirect: s.opts.BlobRedirect,
		MaxBlobSize:  s.opts.Limits.MaxBlobSize, Stats: s.stats, Pulls: s.life.tracker, PushQuota: s.life.quota,
		Access: access, MaxUploadsPerIdentity: s.opts.MaxUploadsPerIdentity, UploadMaxAge: s.opts.UploadMaxAge,
		UploadSessionLifetime: s.opts.UploadSessionLifetime,
	})
	s.guard = newGuard(s.opts.Limits, s.opts.DataDir, promReg)

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.ready)
	metrics := promhttp.HandlerFor(promReg, promhttp.HandlerOpts{})
	if s.opts.MetricsAddr == "" {
		mux.Handle("/metrics", metrics)
	} else {
		s.metrics = metrics // served on its own listener (Run)
	}
	mux.Handle("/subscriptions/", mg) // management plane (ARM-compatible API)
	mux.Handle("/arca/", mg)
	mux.Handle(auth.TokenPath, access.TokenHandler(regs.ForHost))
	mux.Handle("/portal/", po) // web portal (internal/portal)
	mux.Handle("GET /{$}", http.RedirectHandler("/portal/", http.StatusFound))
	mux.Handle(auth.ExchangePath, access.ExchangeHandler(regs.ForHost))
	if peers != nil {
		mux.Handle(cache.PeerPath, peers) // replicas only (cluster.go)
	}
	// /v2/ and /acr/v1/ bypass ServeMux, which would answer paths with
	// "..", "." or "//" with a redirect to a cleaned path instead of the
	// spec's error.
	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/") || strings.HasPrefix(r.URL.Path, "/acr/v1/") {
			reg.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	s.handler = accessLog(s.log, s.opts.AccessLog, routeName, newHTTPMetrics(promReg).instrument(routeName, traced(s.opts.TracerProvider, routeName, s.guard.wrap(root))))
	return nil
}

func routeName(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/v2/"), strings.HasPrefix(p, "/acr/v1/"):
		return registry.RouteName(r.URL.EscapedPath())
	case p == "/healthz", p == "/readyz", p == "/metrics", p == auth.TokenPath, p == auth.ExchangePath:
		return p[1:]
	case strings.HasPrefix(p, "/subscriptions/"), strings.HasPrefix(p, "/arca/"):
		return "mgmt"
	case strings.HasPrefix(p, "/portal/"):
		return "portal"
	case p == cache.PeerPath:
		return "internal"
	}
	return "other"
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.meta.Ping(ctx); err != nil {
		http.Error(w, "metadata store: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if free, need, low := s.guard.space.low(); low {
		http.Error(w, fmt.Sprintf("data dir low on space: %d bytes free, below --min-free-space (%d bytes)", free, need), http.StatusServiceUnavailable)
		return
	}
	if err := s.blobs.Check(ctx); err != nil {
		s.log.Warn("readiness: blob store", "err", err)
		http.Error(w, "blob store not ready", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("ready\n"))
}

// statsFlushInterval is how often per-rule statistics are written.
const statsFlushInterval = 30 * time.Second

// Handler is the full handler tree (for in-process tests).
func (s *Server) Handler() http.Handler { return s.handler }

// Run serves until ctx is cancelled, then drains in-flight requests for up
// to ShutdownTimeout.
func (s *Server) Run(ctx context.Context) error {
	defer s.meta.Close()
	ln, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       s.opts.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	scheme := "http"
	if s.opts.TLSCert != "" || s.opts.TLSKey != "" {
		certs, err := newCertReloader(s.opts.TLSCert, s.opts.TLSKey, s.log)
		if err != nil {
			ln.Close()
			return err
		}
		srv.TLSConfig = &tls.Config{GetCertificate: certs.getCertificate, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	s.log.Info("arca listening", "addr", ln.Addr().String(), "scheme", scheme, "data_dir", s.opts.DataDir, "registry", s.opts.RegistryName)
	if s.opts.PprofAddr != "" {
		stop, err := s.servePprof()
		if err != nil {
			ln.Close()
			return err
		}
		defer stop()
	}
	go s.janitor(ctx)
	go s.gcLoop(ctx)
	go s.syncRegistries(ctx)
	go s.mgmt.RunHealthChecks(ctx)
	statsDone := make(chan struct{})
	go func() {
		defer close(statsDone)
		s.stats.Run(ctx, statsFlushInterval)
	}()
	pullsDone := make(chan struct{})
	go func() {
		defer close(pullsDone)
		s.life.tracker.Run(ctx, s.opts.Lifecycle.PullFlushInterval)
	}()
	s.life.evictor.Init(s.registryNames())
	go s.life.evictor.Run(ctx, s.opts.Lifecycle.EvictionInterval, s.registryNames)
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		if err := s.syncer.Run(ctx); err != nil {
			s.log.Error("active sync stopped", "err", err)
		}
	}()

	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if s.metrics != nil {
		msrv, err := s.serveMetrics(errc)
		if err != nil {
			return err
		}
		defer msrv.Close()
	}
	// Ready once every listener accepts (the metrics one included).
	if s.opts.Ready != nil {
		s.opts.Ready(ln.Addr())
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down: draining in-flight requests", "timeout", s.opts.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.opts.ShutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	// Fetches that clients left go on detached: within the same drain
	// timeout they finish, or are aborted (storing nothing).
	s.cache.Shutdown(sctx)
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	<-syncDone // runs under way record where they were
	<-statsDone
	<-pullsDone
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	// Garbage collection runs started on demand stop and record it.
	s.mgmt.StopOperations(fctx)
	if err := s.stats.Flush(fctx); err != nil {
		s.log.Warn("statistics: final flush failed; the last counts are lost", "err", err)
	}
	if err := s.life.tracker.Flush(fctx); err != nil {
		s.log.Warn("pull times: final flush failed; the last pull times are lost", "err", err)
	}
	s.log.Info("stopped")
	return nil
}

// egressClient is the HTTP client of secret stores and identity endpoints,
// under the egress policy (nil: the secrets package's default).
func egressClient(p *egress.Policy) *http.Client {
	if p.Open() {
		return nil
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = p.DialContext((&net.Dialer{Timeout: 10 * time.Second}).DialContext)
	return &http.Client{Timeout: 30 * time.Second, Transport: t}
}
