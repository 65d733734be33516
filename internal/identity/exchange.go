// Package identity obtains tokens for the user-assigned identities of
// cache rules (--identity) and turns them into upstream credentials with
// ACR's token exchange: the identity's token goes to the upstream's
// POST /oauth2/exchange, which answers with a refresh token; that token is
// the password of the user 00000000-0000-0000-0000-000000000000 on the
// upstream's token endpoint (another arca, or a real ACR: one protocol).
package identity

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// NullUser is ACR's user name for a refresh-token password.
const NullUser = "00000000-0000-0000-0000-000000000000"

// ExchangePath is the token exchange endpoint on an upstream.
const ExchangePath = "/oauth2/exchange"

// Source obtains a token for an identity (its ARM resource id).
type Source interface {
	Token(ctx context.Context, identityID string) (token string, expires time.Time, err error)
}

// Poster POSTs a form to a login server (upstream.Client.PostForm).
type Poster interface {
	PostForm(ctx context.Context, loginServer, path string, form url.Values) (int, []byte, error)
}

// Status is the last outcome of obtaining credentials for one identity at
// one upstream.
type Status struct {
	Healthy bool
	Reason  string // why not ("" when healthy)
	At      time.Time
}

// Exchanger caches refresh tokens per (identity, upstream) until shortly
// before the identity token they came from, or the refresh token itself,
// expires.
type Exchanger struct {
	src    Source
	post   Poster
	tenant string
	now    func() time.Time
	group  singleflight.Group
	mu     sync.Mutex
	cache  map[key]entry
	status map[key]Status
}

type key struct{ identity, loginServer string }

type entry struct {
	refresh string
	until   time.Time
}

// expirySlack: a token is renewed this long before it expires.
const expirySlack = time.Minute

// maxCacheFor bounds how long an exchanged token is reused when neither
// token says when it expires.
const maxCacheFor = 15 * time.Minute

// NewExchanger returns an Exchanger; tenant is sent as the exchange's
// tenant field (may be empty).
func NewExchanger(src Source, post Poster, tenant string, now func() time.Time) (*Exchanger, error) {
	if src == nil || post == nil {
		return nil, errors.New("identity: a token source and a poster are required")
	}
	if now == nil {
		now = time.Now
	}
	return &Exchanger{src: src, post: post, tenant: tenant, now: now, cache: map[key]entry{}, status: map[key]Status{}}, nil
}

// Credentials returns the upstream credentials of identityID at
// loginServer: the null user and a refresh token.
func (e *Exchanger) Credentials(identityID, loginServer string) func(context.Context) (string, string, error) {
	k := key{strings.ToLower(identityID), strings.ToLower(loginServer)}
	return func(ctx context.Context) (string, string, error) {
		rt, err := e.refreshToken(ctx, k)
		if err != nil {
			return "", "", err
		}
		return NullUser, rt, nil
	}
}

// Forget drops the cached token of identityID at loginServer (the
// upstream refused it).
func (e *Exchanger) Forget(identityID, loginServer string) {
	e.mu.Lock()
	delete(e.cache, key{strings.ToLower(identityID), strings.ToLower(loginServer)})
	e.mu.Unlock()
}

// Status reports the last outcome for identityID at loginServer.
func (e *Exchanger) Status(identityID, loginServer string) (Status, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s, ok := e.status[key{strings.ToLower(identityID), strings.ToLower(loginServer)}]
	return s, ok
}

func (e *Exchanger) refreshToken(ctx context.Context, k key) (string, error) {
	e.mu.Lock()
	c, ok := e.cache[k]
	e.mu.Unlock()
	if ok && e.now().Before(c.until) {
		return c.refresh, nil
	}
	ch := e.group.DoChan(k.identity+"\x00"+k.loginServer, func() (any, error) {
		// Detached from the first caller, so its cancellation does not
		// fail the others; bounded instead.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		ent, err := e.exchange(ctx, k)
		e.mu.Lock()
		if err != nil {
			e.status[k] = Status{Reason: err.Error(), At: e.now()}
		} else {
			e.status[k] = Status{Healthy: true, At: e.now()}
			e.cache[k] = ent
		}
		e.mu.Unlock()
		return ent, err
	})
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(entry).refresh, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (e *Exchanger) exchange(ctx context.Context, k key) (entry, error) {
	tok, exp, err := e.src.Token(ctx, k.identity)
	if err != nil {
		return entry{}, fmt.Errorf("token not obtainable: %w", err)
	}
	form := url.Values{"grant_type": {"access_token"}, "service": {k.loginServer}, "access_token": {tok}}
	if e.tenant != "" {
		form.Set("tenant", e.tenant)
	}
	if _, direct := e.src.(*FileSource); direct {
		// A federated token names a workload, which may hold several
		// identities: say which one (an arca upstream's extension; Entra
		// ID tokens name their identity themselves).
		form.Set("identity", k.identity)
	}
	status, body, err := e.post.PostForm(ctx, k.loginServer, ExchangePath, form)
	if err != nil {
		return entry{}, fmt.Errorf("token exchange at %s failed: %w", k.loginServer, err)
	}
	if status != http.StatusOK {
		return entry{}, fmt.Errorf("token exchange refused by %s: HTTP %d: %s", k.loginServer, status, errorText(body))
	}
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.RefreshToken == "" {
		return entry{}, fmt.Errorf("token exchange at %s answered without a refresh_token", k.loginServer)
	}
	until := e.now().Add(maxCacheFor)
	for _, t := range []time.Time{exp, jwtExpiry(out.RefreshToken)} {
		if !t.IsZero() && t.Add(-expirySlack).Before(until) {
			until = t.Add(-expirySlack)
		}
	}
	return entry{refresh: out.RefreshToken, until: until}, nil
}

// errorText is the message of an OCI or OAuth error body, bounded.
func errorText(body []byte) string {
	var oci struct {
		Errors []struct {
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &oci) == nil && len(oci.Errors) > 0 && oci.Errors[0].Message != "" {
		return oci.Errors[0].Message
	}
	s := strings.TrimSpace(string(body))
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// jwtExpiry reads the exp of a JWT without checking it (zero if the token
// is not a JWT or has none): ACR's refresh tokens are JWTs, arca's opaque.
func jwtExpiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp float64 `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil || c.Exp <= 0 {
		return time.Time{}
	}
	return time.Unix(int64(c.Exp), 0)
}
