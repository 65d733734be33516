package server

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/egress"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/mgmt"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/upstream"
)

// PullThroughOptions configure how rule-backed repositories reach upstreams.
type PullThroughOptions struct {
	// InsecureUpstreams are HOST:PORT login servers reached over plain HTTP.
	InsecureUpstreams []string
	// Revalidate is how old a cached tag may get before a pull checks it
	// upstream with a HEAD.
	Revalidate time.Duration
	// FetchTimeout bounds one upstream blob transfer.
	FetchTimeout time.Duration
	// MirrorNamespace is the upstream assumed for requests that match no
	// rule and no repository (Docker's registry-mirrors); "" turns it off.
	MirrorNamespace string
	// UpstreamTimeout bounds waiting for an upstream's response headers.
	UpstreamTimeout time.Duration
	// UpstreamAllow, when not empty, lists the only hosts (HOST, HOST:PORT
	// or CIDR) arca connects to: upstreams, token services, blob storage
	// they redirect to, secret stores. Others are refused unresolved.
	UpstreamAllow []string
}

type pullThrough struct {
	up    *upstream.Client
	rules *cache.RuleSet
	cache *cache.Cache
}

// newPullThrough builds the upstream client, the rule resolver and the cache.
func (s *Server) newPullThrough(reg prometheus.Registerer, secrets cache.SecretResolver, egress *egress.Policy) (*pullThrough, error) {
	o := s.opts.PullThrough
	rl := &rateLimitRecorder{meta: s.meta, log: s.log, last: map[string]upstream.RateLimit{}}
	up, err := upstream.New(upstream.Options{
		Insecure:    o.InsecureUpstreams,
		Timeout:     o.UpstreamTimeout,
		UserAgent:   "arca",
		Logger:      s.log,
		Registerer:  reg,
		OnRateLimit: rl.record,
		Dial:        egress.DialContext((&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext),
	})
	if err != nil {
		return nil, err
	}
	rs := cache.NewRuleSet(s.meta, secrets)
	c := cache.New(cache.Options{
		Blobs: s.blobs, SpoolDir: s.opts.DataDir, Meta: s.meta, Upstream: up, Logger: s.log,
		Revalidate: o.Revalidate, FetchTimeout: o.FetchTimeout, Registerer: reg,
	})
	return &pullThrough{up: up, rules: rs, cache: c}, nil
}

// loginChecker computes credential health as ACR does: both secrets must
// resolve, and the login server must accept them.
type loginChecker struct {
	secrets mgmt.SecretResolver
	up      *upstream.Client
}

func (c loginChecker) Check(ctx context.Context, loginServer, usernameRef, passwordRef string) (string, string, string) {
	status, code, msg := mgmt.ResolveOnlyChecker{Secrets: c.secrets}.Check(ctx, loginServer, usernameRef, passwordRef)
	if status != rules.Healthy {
		return status, code, msg
	}
	creds := func(ctx context.Context) (string, string, error) {
		u, err := c.secrets.Resolve(ctx, usernameRef)
		if err != nil {
			return "", "", err
		}
		p, err := c.secrets.Resolve(ctx, passwordRef)
		return u, p, err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := c.up.CheckLogin(ctx, loginServer, creds); err != nil {
		return rules.Unhealthy, "LoginFailed", "Logging in to " + loginServer + " failed: " + err.Error()
	}
	return rules.Healthy, "", ""
}

// rateLimitRecorder persists Docker Hub rate-limit observations so every
// replica's `credential-set show` sees them. Writes are skipped while
// nothing changed, to keep the metadata store out of the pull path.
type rateLimitRecorder struct {
	meta *metadata.SQLite
	log  *slog.Logger
	mu   sync.Mutex
	last map[string]upstream.RateLimit
}

func (r *rateLimitRecorder) record(credKey, host string, rl upstream.RateLimit) {
	source := metadata.RateLimitSource(credKey, host)
	r.mu.Lock()
	prev, seen := r.last[source]
	if seen && prev.Remaining == rl.Remaining && prev.Limit == rl.Limit && rl.ObservedAt.Sub(prev.ObservedAt) < 30*time.Second {
		r.mu.Unlock()
		return
	}
	r.last[source] = rl
	r.mu.Unlock()
	// Recorded off the request path: the hook is called synchronously.
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := r.meta.RecordRateLimit(ctx, source, metadata.RateLimit{Limit: rl.Limit, Remaining: rl.Remaining, Window: rl.Window, ObservedAt: rl.ObservedAt})
		if err != nil {
			r.log.Warn("record upstream rate limit", "source", source, "err", err)
		}
	}()
}
