package upstream

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// tokenCache is an auth.Cache that forgets bearer tokens when they expire.
//
// oras-go's own auth.NewCache (v2.6.4) keeps a token until the registry
// answers 401 with it: it never reads expires_in and never evicts. This
// cache reads the expiry from the token itself (a JWT "exp", as Docker Hub,
// distribution token servers, Quay and most others issue; parsed with
// golang-jwt, signature not checked: we are not the audience) and drops the
// token shortly before then, so an expired token is never sent and the map
// does not grow forever. Opaque tokens are kept until a 401, as oras does;
// oras then fetches a new one and Set replaces it.
//
// One cache serves one credential partition (a Client keeps one per
// CredKey); keys are the registry host and oras' scope key.
type tokenCache struct {
	mu    sync.Mutex
	hosts map[string]*hostTokens
	group singleflight.Group
	now   func() time.Time
}

type hostTokens struct {
	scheme auth.Scheme
	tokens map[string]cachedToken
}

type cachedToken struct {
	value   string
	expires time.Time // zero: unknown, kept until a 401 replaces it
}

var errNotCached = errors.New("not cached")

func newTokenCache() *tokenCache {
	return &tokenCache{hosts: map[string]*hostTokens{}, now: time.Now}
}

func (c *tokenCache) GetScheme(_ context.Context, registry string) (auth.Scheme, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if h, ok := c.hosts[registry]; ok {
		return h.scheme, nil
	}
	return auth.SchemeUnknown, errNotCached
}

func (c *tokenCache) GetToken(_ context.Context, registry string, scheme auth.Scheme, key string) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.hosts[registry]
	if !ok || h.scheme != scheme {
		return "", errNotCached
	}
	tok, ok := h.tokens[key]
	if !ok {
		return "", errNotCached
	}
	if !tok.expires.IsZero() && !c.now().Before(tok.expires) {
		delete(h.tokens, key)
		return "", errNotCached
	}
	return tok.value, nil
}

// Set fetches once for concurrent callers with the same key. The fetch runs
// detached from the first caller's cancellation (bounded by the transport's
// timeouts) so one impatient caller does not fail the others; each caller
// still stops waiting when its own context ends.
func (c *tokenCache) Set(ctx context.Context, registry string, scheme auth.Scheme, key string, fetch func(context.Context) (string, error)) (string, error) {
	ch := c.group.DoChan(registry+" "+scheme.String()+" "+key, func() (any, error) {
		tok, err := fetch(context.WithoutCancel(ctx))
		if err != nil {
			return "", err
		}
		c.store(registry, scheme, key, tok)
		return tok, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (c *tokenCache) store(registry string, scheme auth.Scheme, key, tok string) {
	now := c.now()
	entry := cachedToken{value: tok}
	if scheme == auth.SchemeBearer {
		entry.expires = tokenExpiry(tok, now)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.hosts[registry]
	if !ok || h.scheme != scheme {
		// A scheme change invalidates everything cached for the host.
		h = &hostTokens{scheme: scheme, tokens: map[string]cachedToken{}}
		c.hosts[registry] = h
	}
	for k, t := range h.tokens { // evict the expired while we hold the lock
		if !t.expires.IsZero() && !now.Before(t.expires) {
			delete(h.tokens, k)
		}
	}
	h.tokens[key] = entry
}

// maxRefreshMargin caps how early a token is dropped before it expires.
const maxRefreshMargin = 30 * time.Second

// tokenExpiry is when to stop using a JWT fetched at now: its lifetime
// (exp - iat, measured on the issuer's clock, so clock skew does not
// matter) after now, less a tenth of it (at most 30s) for requests in
// flight. Zero when the token is not a JWT or says nothing usable.
func tokenExpiry(tok string, now time.Time) time.Time {
	var claims jwt.RegisteredClaims
	if _, _, err := jwt.NewParser().ParseUnverified(tok, &claims); err != nil || claims.ExpiresAt == nil {
		return time.Time{}
	}
	exp := claims.ExpiresAt.Time
	var lifetime time.Duration
	if claims.IssuedAt != nil {
		lifetime = exp.Sub(claims.IssuedAt.Time)
	} else {
		lifetime = exp.Sub(now)
	}
	if lifetime <= 0 {
		return time.Time{} // already expired by our clock: let a 401 decide
	}
	return now.Add(lifetime - min(lifetime/10, maxRefreshMargin))
}
