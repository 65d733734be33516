package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
)

// Store is what access control reads and writes in the metadata store.
type Store interface {
	KeyStore
	GetRegistrySettings(ctx context.Context, registry string) (metadata.RegistrySettings, error)
	GetToken(ctx context.Context, registry, name string) (metadata.Token, error)
	GetScopeMap(ctx context.Context, registry, name string) (metadata.ScopeMap, error)
	PutRefreshToken(ctx context.Context, t metadata.RefreshToken) error
	GetRefreshToken(ctx context.Context, hash string) (metadata.RefreshToken, error)
	AddAudit(ctx context.Context, e metadata.AuditEntry) error
	// Failed logins are counted where every replica sees them.
	FailureStore
}

// PrincipalLookup resolves management principals (whose roles grant
// data-plane rights) for the data plane: a principal logs in with its name
// and management token.
type PrincipalLookup interface {
	VerifyPrincipal(ctx context.Context, registry, secret string) (name string, perms Perms, ok bool, err error)
	PrincipalPerms(ctx context.Context, registry, name string) (Perms, bool, error)
}

// Defaults for Options.
const (
	DefaultAccessTTL   = 5 * time.Minute
	DefaultRefreshTTL  = 24 * time.Hour
	DefaultRotateAfter = 24 * time.Hour
	// DefaultMaxFailures failed logins per source address, and per
	// identity, within DefaultFailureWindow before further attempts are
	// refused for the rest of the window.
	DefaultMaxFailures   = 10
	DefaultFailureWindow = time.Minute
	// DefaultSubscriptionID and DefaultResourceGroup are the management
	// API's defaults (mgmt.DefaultSubscriptionID, mgmt.DefaultResourceGroup).
	DefaultSubscriptionID = "00000000-0000-0000-0000-000000000000"
	DefaultResourceGroup  = "arca"
)

// Options configure a Service.
type Options struct {
	Store Store
	// Principals, if set, lets management principals log in.
	Principals PrincipalLookup
	// Identities, if set, lets user-assigned identities authenticate
	// (POST /oauth2/exchange) with the rights of their role assignments.
	Identities IdentityStore
	// OIDCClient fetches federated issuers' discovery documents and keys
	// (nil: a client with a 15 s timeout).
	OIDCClient *http.Client
	// SubscriptionID and ResourceGroup place the registries in ARM
	// scopes (role assignments' scopes name them).
	SubscriptionID string
	ResourceGroup  string
	// Open turns access control off: every request may pull, push and
	// delete. Only for trials on loopback; the server refuses it elsewhere.
	Open bool
	// ExternalURL is the base of the token realm; empty derives it from
	// each request's scheme and Host.
	ExternalURL   string
	AccessTTL     time.Duration
	RefreshTTL    time.Duration
	RotateAfter   time.Duration
	MaxFailures   int
	FailureWindow time.Duration
	Logger        *slog.Logger
	Now           func() time.Time
}

// Service authenticates and authorizes data-plane requests and issues
// tokens.
type Service struct {
	store      Store
	principals PrincipalLookup
	identities IdentityStore
	federation *federation
	// subscription and resourceGroup are the ARM scope of the registries.
	subscription, resourceGroup string
	open                        bool
	externalURL                 string
	accessTTL                   time.Duration
	refreshTTL                  time.Duration
	keys                        *Keyring
	throttle                    *Throttle
	verified                    *verifiedCache
	anon                        anonCache
	bearers                     bearerCache
	log                         *slog.Logger
	now                         func() time.Time
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil && !o.Open {
		return nil, errors.New("auth: a store is required")
	}
	if o.AccessTTL <= 0 {
		o.AccessTTL = DefaultAccessTTL
	}
	if o.RefreshTTL <= 0 {
		o.RefreshTTL = DefaultRefreshTTL
	}
	if o.RotateAfter <= 0 {
		o.RotateAfter = DefaultRotateAfter
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = DefaultMaxFailures
	}
	if o.FailureWindow <= 0 {
		o.FailureWindow = DefaultFailureWindow
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.SubscriptionID == "" {
		o.SubscriptionID = DefaultSubscriptionID
	}
	if o.ResourceGroup == "" {
		o.ResourceGroup = DefaultResourceGroup
	}
	s := &Service{store: o.Store, principals: o.Principals, identities: o.Identities, federation: newFederation(o.OIDCClient, o.Now),
		subscription: o.SubscriptionID, resourceGroup: o.ResourceGroup, open: o.Open, externalURL: strings.TrimSuffix(o.ExternalURL, "/"),
		accessTTL: o.AccessTTL, refreshTTL: o.RefreshTTL, throttle: NewThrottle(o.MaxFailures, o.FailureWindow, o.Now),
		verified: newVerifiedCache(5 * time.Minute), log: o.Logger, now: o.Now}
	if o.Store != nil {
		s.throttle.Share(o.Store, "registry", o.Logger)
		k, err := NewKeyring(o.Store, o.RotateAfter, o.AccessTTL, o.Now)
		if err != nil {
			return nil, err
		}
		s.keys = k
	}
	return s, nil
}

// anonCache keeps each registry's anonymous-pull setting for a second,
// so anonymous pulls do not read the metadata store on every request.
// Changes made through this replica apply at once (Invalidate); other
// replicas see them within a second.
type anonCache struct {
	mu sync.Mutex
	m  map[string]anonEntry
}

type anonEntry struct {
	on bool
	at time.Time
}

const anonCacheTTL = time.Second

// anonymousPull reports whether registry allows anonymous pulls.
func (s *Service) anonymousPull(ctx context.Context, registry string) (bool, error) {
	now := s.now()
	s.anon.mu.Lock()
	e, ok := s.anon.m[registry]
	s.anon.mu.Unlock()
	if ok && now.Sub(e.at) < anonCacheTTL {
		return e.on, nil
	}
	set, err := s.store.GetRegistrySettings(ctx, registry)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return false, err
	}
	s.anon.mu.Lock()
	if s.anon.m == nil || len(s.anon.m) > 10_000 {
		s.anon.m = map[string]anonEntry{}
	}
	s.anon.m[registry] = anonEntry{on: set.AnonymousPull, at: now}
	s.anon.mu.Unlock()
	return set.AnonymousPull, nil
}

// bearerCache remembers verified access tokens until they expire, so a
// client reusing its token pays the JWT parse and HMAC once. Only tokens
// that verified enter it; keys are SHA-256 of registry and token.
type bearerCache struct {
	mu sync.Mutex
	m  map[[32]byte]*Claims
}

const maxBearers = 10_000

func (s *Service) verifyBearer(ctx context.Context, token, registry string) (*Claims, error) {
	k := sha256.Sum256([]byte(registry + "\x00" + token))
	now := s.now()
	s.bearers.mu.Lock()
	c, ok := s.bearers.m[k]
	s.bearers.mu.Unlock()
	if ok && now.Before(c.ExpiresAt.Time) {
		return c, nil
	}
	c, err := s.keys.Verify(ctx, token, registry)
	if err != nil {
		return nil, err
	}
	s.bearers.mu.Lock()
	if s.bearers.m == nil || len(s.bearers.m) >= maxBearers {
		s.bearers.m = map[[32]byte]*Claims{}
	}
	s.bearers.m[k] = c
	s.bearers.mu.Unlock()
	return c, nil
}

// Invalidate drops what is cached about registry's settings (called after
// a change through this replica's management API).
func (s *Service) Invalidate(registry string) {
	s.anon.mu.Lock()
	delete(s.anon.m, registry)
	s.anon.mu.Unlock()
}

// Open reports whether access control is off.
func (s *Service) Open() bool { return s.open }

// Grant is what a request was allowed, for handlers that filter what they
// return (the catalog).
type Grant struct {
	svc      *Service
	identity Identity
	open     bool
	bearer   bool
}

// Identity is who the request is (Kind "" when access control is off).
func (g *Grant) Identity() Identity { return g.identity }

// RepoFilter returns which repositories the caller may read: the catalog
// lists only those. For a bearer token the identity is read again, since
// the token carries only the scopes it was issued for.
func (g *Grant) RepoFilter(ctx context.Context) (func(repo string) bool, error) {
	if g.open {
		return func(string) bool { return true }, nil
	}
	perms := g.identity.Perms
	if g.bearer {
		id, ok, err := g.svc.current(ctx, g.identity.Registry, g.identity.Kind, g.identity.Name, "")
		if err != nil {
			return nil, err
		}
		if !ok {
			return func(string) bool { return false }, nil
		}
		perms = id.Perms
	}
	return func(repo string) bool { return perms.Allows(repo, Pull) || perms.Allows(repo, MetadataRead) }, nil
}

// CatalogScope is what listing the catalog needs.
var CatalogScope = Scope{Type: "registry", Name: "catalog", Actions: []string{"*"}}

// RepoScope is what an operation on a repository needs.
func RepoScope(repo string, actions ...Action) Scope {
	s := Scope{Type: "repository", Name: repo}
	for _, a := range actions {
		s.Actions = append(s.Actions, string(a))
	}
	return s
}

// Authorize decides whether r may do what need says on registry. When it
// may not, Authorize writes the answer (401 with a Bearer challenge for
// the token endpoint, 403 DENIED when the caller is known and lacks the
// permission, 429 when throttled) and returns ok false. An empty need (GET
// /v2/) only requires an authenticated caller.
func (s *Service) Authorize(w http.ResponseWriter, r *http.Request, registry string, need []Scope) (*Grant, bool) {
	if s.open {
		return &Grant{svc: s, open: true}, true
	}
	ctx := r.Context()
	scheme, cred, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	cred = strings.TrimSpace(cred)
	switch {
	case cred != "" && strings.EqualFold(scheme, "Basic"):
		user, pass, ok := parseBasic(cred)
		if !ok {
			s.challenge(w, r, need, "invalid_request", "malformed Basic credentials")
			return nil, false
		}
		id, err := s.checkPassword(ctx, registry, user, pass, remoteHost(r))
		if err != nil {
			s.authError(w, r, need, err)
			return nil, false
		}
		if !allows(id.Perms, need, true) {
			s.deny(w, r, need)
			return nil, false
		}
		return &Grant{svc: s, identity: id}, true
	case cred != "" && strings.EqualFold(scheme, "Bearer"):
		ipKey := "ip:" + remoteHost(r)
		if _, blocked := s.throttle.Blocked(ipKey); blocked {
			s.authError(w, r, need, errThrottled)
			return nil, false
		}
		c, err := s.verifyBearer(ctx, cred, registry)
		if err != nil {
			// Forged or foreign tokens count as failed logins; an expired
			// one of ours is the normal end of a token's life.
			if !errors.Is(err, jwt.ErrTokenExpired) {
				s.throttle.Fail(ctx, ipKey)
				s.audit(ctx, registry, "-", remoteHost(r), "invalid bearer token")
			}
			s.challenge(w, r, need, "invalid_token", "invalid or expired access token")
			return nil, false
		}
		id := Identity{Registry: registry, Kind: c.Kind, Name: c.Subject, Perms: accessPerms(c.Access)}
		if allows(id.Perms, need, catalogGranted(c.Access)) {
			return &Grant{svc: s, identity: id, bearer: true}, true
		}
		// The token lacks a scope: ask for another if the identity would
		// get it, refuse for good if not.
		cur, ok, err := s.current(ctx, registry, c.Kind, c.Subject, "")
		if err != nil {
			s.fail(w, r, err)
			return nil, false
		}
		if ok && allows(cur.Perms, need, true) {
			s.challenge(w, r, need, "insufficient_scope", "the access token does not cover this request")
			return nil, false
		}
		s.deny(w, r, need)
		return nil, false
	case cred != "":
		s.challenge(w, r, need, "invalid_request", "unsupported authorization scheme")
		return nil, false
	}
	if len(need) > 0 {
		id, ok, err := s.current(ctx, registry, KindAnonymous, "", "")
		if err != nil {
			s.fail(w, r, err)
			return nil, false
		}
		if ok && allows(id.Perms, need, true) {
			return &Grant{svc: s, identity: id}, true
		}
	}
	s.challenge(w, r, need, "", "")
	return nil, false
}

// allows reports whether perms cover every scope of need; catalog says
// whether registry:catalog:* is covered.
func allows(perms Perms, need []Scope, catalog bool) bool {
	for _, sc := range need {
		if sc.Type == CatalogScope.Type {
			if !catalog {
				return false
			}
			continue
		}
		for _, a := range sc.Actions {
			if !perms.Allows(sc.Name, Action(a)) {
				return false
			}
		}
	}
	return true
}

func catalogGranted(access []Scope) bool {
	for _, a := range access {
		if a.Type == CatalogScope.Type && a.Name == CatalogScope.Name && slices.Contains(a.Actions, "*") {
			return true
		}
	}
	return false
}

// accessPerms turns a token's access claim into exact-name rules.
func accessPerms(access []Scope) Perms {
	var p Perms
	for _, a := range access {
		if a.Type != "repository" || strings.Contains(a.Name, "*") {
			continue
		}
		var acts []Action
		for _, x := range a.Actions {
			if x == "*" {
				acts = append(acts, AllActions...)
			} else {
				acts = append(acts, Action(x))
			}
		}
		p = append(p, Rule{Pattern: a.Name, Actions: acts})
	}
	return p
}

func parseBasic(cred string) (user, pass string, ok bool) {
	b, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(b), ":")
	return user, pass, ok
}

func remoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

// realm is the token endpoint's URL.
func (s *Service) realm(r *http.Request) string {
	if s.externalURL != "" {
		return s.externalURL + TokenPath
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + TokenPath
}

type detail struct {
	Type   string
	Name   string
	Action string
}

func details(need []Scope) []detail {
	var out []detail
	for _, sc := range need {
		for _, a := range sc.Actions {
			out = append(out, detail{sc.Type, sc.Name, a})
		}
	}
	return out
}

func quote(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// challenge answers 401 with a Bearer challenge naming the scopes needed.
func (s *Service) challenge(w http.ResponseWriter, r *http.Request, need []Scope, errCode, msg string) {
	v := "Bearer realm=" + quote(s.realm(r)) + ",service=" + quote(r.Host)
	if len(need) > 0 {
		sc := make([]string, len(need))
		for i, n := range need {
			sc[i] = n.String()
		}
		v += ",scope=" + quote(strings.Join(sc, " "))
	}
	if errCode != "" {
		v += ",error=" + quote(errCode)
	}
	w.Header().Set("WWW-Authenticate", v)
	if msg == "" {
		msg = errcode.Unauthorized.Message
	}
	errcode.Write(w, r, errcode.Unauthorized.WithDetail(msg, details(need)))
}

func (s *Service) deny(w http.ResponseWriter, r *http.Request, need []Scope) {
	errcode.Write(w, r, errcode.Denied.WithDetail(errcode.Denied.Message, details(need)))
}

func (s *Service) authError(w http.ResponseWriter, r *http.Request, need []Scope, err error) {
	switch {
	case errors.Is(err, errThrottled):
		w.Header().Set("Retry-After", "60")
		errcode.Write(w, r, errcode.New(errcode.TooManyRequests, "too many failed login attempts; try again later"))
	case errors.Is(err, errBadCredentials):
		s.challenge(w, r, need, "invalid_token", err.Error())
	default:
		s.fail(w, r, err)
	}
}

func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	s.log.ErrorContext(r.Context(), "access check failed", "path", r.URL.Path, "err", err)
	errcode.Write(w, r, err)
}

// issue signs an access token granting access to id.
func (s *Service) issue(ctx context.Context, id Identity, access []Scope) (string, time.Time, error) {
	now := s.now()
	c := &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: Issuer, Subject: id.Name, Audience: jwt.ClaimStrings{id.Registry},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.accessTTL)), ID: randomID(),
		},
		Access: access, Kind: id.Kind,
	}
	if access == nil {
		c.Access = []Scope{}
	}
	tok, err := s.keys.Sign(ctx, c)
	return tok, now, err
}
