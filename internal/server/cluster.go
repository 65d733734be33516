package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/arcacache/arca/internal/auth"
	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/errcode"
)

// ClusterOptions configure a replica of several on one PostgreSQL database
// and one S3 bucket (see docs/architecture.md, "Several replicas").
type ClusterOptions struct {
	// Advertise is the base URL (http://HOST:PORT or https://...) at which
	// the other replicas reach this one's internal endpoint, where they
	// follow its upstream fetches. "": they wait until what it fetches is
	// stored.
	Advertise string
	// FetchLeaseTTL is how long a blob's fetch lease lasts unless renewed:
	// the longest a dead replica delays another's fetch of that blob.
	FetchLeaseTTL time.Duration
	// SyncLeaseTTL is how long an active sync rule's lease lasts unless
	// renewed: the longest a dead replica's rule waits for another.
	SyncLeaseTTL time.Duration
}

// clusterAudience is the audience of the tokens replicas present to one
// another: never a registry name (those have no ':'), so a data-plane
// token is never one of them, nor the other way round.
const clusterAudience = "arca:replicas"

// replicaKind is the arca_kind claim of a replica's token.
const replicaKind = "replica"

// checkAdvertise validates --cluster-advertise.
func checkAdvertise(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return fmt.Errorf("--cluster-advertise %q: want http://HOST:PORT or https://HOST:PORT", s)
	}
	if _, _, err := net.SplitHostPort(u.Host); err != nil {
		return fmt.Errorf("--cluster-advertise %q: want a port: %v", s, err)
	}
	return nil
}

// replicaTokens signs and checks the tokens replicas present to one
// another, with the JWT signing keys every replica reads from the
// metadata store: no secret to distribute, and only a process that can
// read the store can mint one.
type replicaTokens struct {
	keys   *auth.Keyring
	holder string

	mu  sync.Mutex
	tok string
	exp time.Time
}

const replicaTokenTTL = 5 * time.Minute

func newReplicaTokens(ks auth.KeyStore, holder string) (*replicaTokens, error) {
	k, err := auth.NewKeyring(ks, auth.DefaultRotateAfter, replicaTokenTTL, nil)
	if err != nil {
		return nil, err
	}
	return &replicaTokens{keys: k, holder: holder}, nil
}

// token returns a token to present, reissued when less than half its
// lifetime is left.
func (r *replicaTokens) token(ctx context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	if r.tok != "" && now.Before(r.exp.Add(-replicaTokenTTL/2)) {
		return r.tok, nil
	}
	exp := now.Add(replicaTokenTTL)
	tok, err := r.keys.Sign(ctx, &auth.Claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer: auth.Issuer, Subject: r.holder, Audience: jwt.ClaimStrings{clusterAudience},
		IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp),
	}, Kind: replicaKind})
	if err != nil {
		return "", fmt.Errorf("replica token: %w", err)
	}
	r.tok, r.exp = tok, exp
	return tok, nil
}

var errNotReplica = errors.New("not a replica's token")

func (r *replicaTokens) verify(req *http.Request) error {
	tok, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return errNotReplica
	}
	c, err := r.keys.Verify(req.Context(), tok, clusterAudience)
	if err != nil {
		return err
	}
	if c.Kind != replicaKind {
		return errNotReplica
	}
	return nil
}

// peerHandler serves the internal endpoint, to replicas only.
func (s *Server) peerHandler(toks *replicaTokens, c *cache.Cache) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			errcode.Write(w, r, errcode.New(errcode.Unsupported, "method not allowed"))
			return
		}
		if err := toks.verify(r); err != nil {
			s.log.Warn("internal endpoint: refused a request without a replica's token", "remote", r.RemoteAddr, "err", err)
			errcode.Write(w, r, errcode.New(errcode.Unauthorized, "authentication required"))
			return
		}
		c.ServePeer(w, r)
	})
}

// useCluster makes the cache fetch under leases in the metadata store and
// follow other replicas' fetches; only PostgreSQL is shared by replicas.
func (s *Server) useCluster(c *cache.Cache) (http.Handler, error) {
	if s.meta.Backend() != "postgres" {
		if s.opts.Cluster.Advertise != "" {
			s.log.Warn("--cluster-advertise is ignored: replicas share a PostgreSQL metadata store (--metadata postgres://...)")
		}
		return nil, nil
	}
	toks, err := newReplicaTokens(s.meta, s.replica)
	if err != nil {
		return nil, err
	}
	o := s.opts.Cluster
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = time.Minute // the holder answers once its upstream did
	err = c.UseCluster(&cache.Cluster{
		Leases: s.meta, Holder: s.replica, Addr: strings.TrimSuffix(o.Advertise, "/"),
		Client: &http.Client{Transport: t}, Token: toks.token, LeaseTTL: o.FetchLeaseTTL,
	})
	if err != nil {
		return nil, err
	}
	s.log.Info("cluster: fetches under leases in PostgreSQL", "replica", s.replica, "advertise", o.Advertise)
	return s.peerHandler(toks, c), nil
}
