package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/egress"
	"github.com/arcacache/arca/internal/identity"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/mgmt"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/secrets"
	"github.com/arcacache/arca/internal/upstream"
)

// PullThroughOptions configure how rule-backed repositories reach upstreams.
type PullThroughOptions struct {
	// InsecureUpstreams are HOST:PORT login servers reached over plain HTTP.
	InsecureUpstreams []string
	// Revalidate is how old a cached tag may get before a pull checks it
	// upstream with a HEAD.
	Revalidate time.Duration
	// RevalidateTimeout is how long a pull waits for that check before it
	// serves the cached manifest (the check goes on in the background).
	RevalidateTimeout time.Duration
	// NegativeTTL is how long an upstream 404 is remembered.
	NegativeTTL time.Duration
	// FetchTimeout bounds one upstream blob transfer.
	FetchTimeout time.Duration
	// MirrorNamespace is the upstream assumed for requests that match no
	// rule and no repository (Docker's registry-mirrors); "" turns it off.
	MirrorNamespace string
	// UpstreamConnectTimeout, UpstreamHeaderTimeout and UpstreamIdleTimeout
	// bound a connect (and TLS handshake), the wait for response headers,
	// and a pause in a response body.
	UpstreamConnectTimeout, UpstreamHeaderTimeout, UpstreamIdleTimeout time.Duration
	// UpstreamAllow, when not empty, lists the only hosts (HOST, HOST:PORT
	// or CIDR) arca connects to: upstreams, token services, blob storage
	// they redirect to, secret stores. Others are refused unresolved. When
	// empty, upstream traffic may reach public addresses, and non-public
	// ones only for hosts a cache rule or credential set names.
	UpstreamAllow []string
	// UpstreamCA are PEM files of CAs trusted for upstreams, besides the
	// system's (a private registry's CA).
	UpstreamCA []string
}

type pullThrough struct {
	up    *upstream.Client
	rules *cache.RuleSet
	cache *cache.Cache
	ids   *identity.Exchanger
}

// newPullThrough builds the upstream client, the rule resolver and the cache.
func (s *Server) newPullThrough(reg prometheus.Registerer, res cache.SecretResolver, egress *egress.Policy) (*pullThrough, error) {
	o := s.opts.PullThrough
	rl := &rateLimitRecorder{meta: s.meta, log: s.log, last: map[string]upstream.RateLimit{}}
	roots, err := upstreamRoots(o.UpstreamCA)
	if err != nil {
		return nil, err
	}
	named := &namedHosts{meta: s.meta, log: s.log}
	up, err := upstream.New(upstream.Options{
		RootCAs:        roots,
		Insecure:       o.InsecureUpstreams,
		ConnectTimeout: o.UpstreamConnectTimeout,
		HeaderTimeout:  o.UpstreamHeaderTimeout,
		IdleTimeout:    o.UpstreamIdleTimeout,
		// A pull does not sit out a long Retry-After: it is answered (stale
		// content, or a 424) while the host is held back; active sync
		// defers itself on the 429 it then sees.
		MaxRetryAfter: o.RevalidateTimeout,
		// A 429 holds the cluster back, not only this replica: the holds
		// are shared through the metadata store.
		Health:      upstream.HealthOptions{Shared: s.meta},
		UserAgent:   "arca",
		Logger:      s.log,
		Registerer:  reg,
		OnRateLimit: rl.record,
		Dial:        egress.UpstreamDial(&net.Dialer{KeepAlive: 30 * time.Second}, named.has),
	})
	if err != nil {
		return nil, err
	}
	rs := cache.NewRuleSet(s.meta, res)
	// Rules with --identity: tokens from this process's environment
	// (workload identity file, managed identity), exchanged at the upstream.
	ex, err := identity.NewExchanger(identity.FromEnvironment(os.Getenv), up, os.Getenv("AZURE_TENANT_ID"), nil)
	if err != nil {
		return nil, err
	}
	rs.UseIdentities(ex)
	rs.UseCredentialCache(up)
	c := cache.New(cache.Options{
		Blobs: s.blobs, SpoolDir: s.opts.DataDir, Meta: s.meta, Upstream: up, Logger: s.log,
		Revalidate: o.Revalidate, RevalidateTimeout: o.RevalidateTimeout, NegativeTTL: o.NegativeTTL,
		FetchTimeout: o.FetchTimeout, Registerer: reg,
	})
	return &pullThrough{up: up, rules: rs, cache: c, ids: ex}, nil
}

// health is the data plane's view of loginServer's host, for the
// management API.
func (p *pullThrough) health(loginServer string) mgmt.UpstreamHealth {
	st := p.up.HostHealth(loginServer)
	return mgmt.UpstreamHealth{Healthy: st.Healthy, RateLimited: st.RateLimited, Reason: st.Reason, Until: st.Until}
}

// loginChecker computes credential health as ACR does: both secrets must
// resolve, and the login server must accept them.
type loginChecker struct {
	secrets mgmt.SecretResolver
	up      *upstream.Client
}

func (c loginChecker) Check(ctx context.Context, cs rules.CredentialSet) (string, string, string) {
	status, code, msg := mgmt.ResolveOnlyChecker{Secrets: c.secrets}.Check(ctx, cs)
	if status != rules.Healthy {
		return status, code, msg
	}
	loginServer, id := cs.LoginServer, secrets.UserAssigned(cs.Identity)
	creds := func(ctx context.Context) (string, string, error) {
		u, err := c.secrets.ResolveAs(ctx, cs.UsernameRef, id)
		if err != nil {
			return "", "", err
		}
		p, err := c.secrets.ResolveAs(ctx, cs.PasswordRef, id)
		return u, p, err
	}
	ctx, cancel := context.WithTimeout(withNamedLoginServer(ctx, loginServer), 20*time.Second)
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
	meta metadata.Store
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

// namedHosts answers the egress policy's question "does a cache rule or
// credential set name this host?" from the metadata store, re-read at most
// every namedHostsTTL (only dials to non-public addresses ask).
type namedHosts struct {
	meta metadata.Store
	log  *slog.Logger

	mu     sync.Mutex
	hosts  map[string]bool
	readAt time.Time
}

const namedHostsTTL = 2 * time.Second

type namedLoginServerKey struct{}

// withNamedLoginServer names loginServer for the dials under ctx: a
// credential set is checked before it is saved, and names its login
// server itself.
func withNamedLoginServer(ctx context.Context, loginServer string) context.Context {
	return context.WithValue(ctx, namedLoginServerKey{}, loginServer)
}

func (n *namedHosts) has(ctx context.Context, hostport string) bool {
	if ls, ok := ctx.Value(namedLoginServerKey{}).(string); ok && loginServersName(loginServerHosts([]string{ls}), hostport) {
		return true
	}
	n.mu.Lock()
	hosts, fresh := n.hosts, time.Since(n.readAt) < namedHostsTTL
	n.mu.Unlock()
	if !fresh {
		list, err := n.meta.LoginServers(ctx)
		if err != nil {
			n.log.Warn("egress: reading the hosts rules name", "err", err)
			return false
		}
		hosts = loginServerHosts(list)
		n.mu.Lock()
		n.hosts, n.readAt = hosts, time.Now()
		n.mu.Unlock()
	}
	return loginServersName(hosts, hostport)
}

// loginServerHosts is the set of "host" and "host:port" forms the login
// servers name.
func loginServerHosts(list []string) map[string]bool {
	hosts := map[string]bool{}
	for _, h := range list {
		hosts[strings.ToLower(h)] = true
		hosts[strings.ToLower(upstream.Endpoint(h))] = true
	}
	return hosts
}

// loginServersName reports whether hosts (of loginServerHosts) name
// hostport as dialled.
func loginServersName(hosts map[string]bool, hostport string) bool {
	if hosts[hostport] {
		return true
	}
	// A login server written without a port names the default ports.
	host, port, err := net.SplitHostPort(hostport)
	return err == nil && (port == "443" || port == "80") && hosts[host]
}

// upstreamRoots is the system's roots plus the CAs in files (nil: none given).
func upstreamRoots(files []string) (*x509.CertPool, error) {
	if len(files) == 0 {
		return nil, nil
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--upstream-ca: %w", err)
		}
		if !pool.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("--upstream-ca %s: no PEM certificate in it", f)
		}
	}
	return pool, nil
}

// CheckIdentity is a rule's identity status: the identity's token is
// obtained and exchanged at the upstream, and (for a rule with one
// source repository) the upstream lets it list that repository's tags.
func (p *pullThrough) CheckIdentity(ctx context.Context, registry string, r rules.Rule) mgmt.IdentityStatus {
	src, err := rules.ParseSource(r.Source)
	if err != nil {
		return mgmt.IdentityStatus{Status: rules.Unhealthy, Reason: err.Error()}
	}
	t, ok := p.rules.TargetFor(registry, r, r.Target)
	if !ok || strings.HasSuffix(r.Source, "/*") {
		if _, _, err := p.rules.IdentityCredentials(r.Identity, src.LoginServer)(ctx); err != nil {
			return mgmt.IdentityStatus{Status: rules.Unhealthy, Reason: err.Error()}
		}
		return mgmt.IdentityStatus{Status: rules.Healthy}
	}
	errStop := errors.New("stop")
	if err := p.up.Tags(ctx, t.Upstream, func([]string) error { return errStop }); err != nil && !errors.Is(err, errStop) {
		reason := err.Error()
		var ue *upstream.Error
		if errors.As(err, &ue) && (ue.StatusCode == http.StatusUnauthorized || ue.StatusCode == http.StatusForbidden) {
			reason = "role missing: " + t.Upstream.Host + " refused pull of " + t.Upstream.Path + " to identity " + r.Identity + ": " + reason
		}
		return mgmt.IdentityStatus{Status: rules.Unhealthy, Reason: reason}
	}
	return mgmt.IdentityStatus{Status: rules.Healthy}
}
