package server

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/cache"
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
}

type pullThrough struct {
	up    *upstream.Client
	rules *cache.RuleSet
	cache *cache.Cache
}

// newPullThrough builds the upstream client, the rule resolver and the cache.
func (s *Server) newPullThrough(reg prometheus.Registerer, secrets cache.SecretResolver) (*pullThrough, error) {
	o := s.opts.PullThrough
	up, err := upstream.New(upstream.Options{
		Insecure:   o.InsecureUpstreams,
		Timeout:    o.UpstreamTimeout,
		UserAgent:  "arca",
		Logger:     s.log,
		Registerer: reg,
	})
	if err != nil {
		return nil, err
	}
	rs := cache.NewRuleSet(s.meta, secrets)
	c := cache.New(cache.Options{
		Blobs: s.blobs, Meta: s.meta, Upstream: up, Logger: s.log,
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
