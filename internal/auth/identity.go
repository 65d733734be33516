package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/metadata"
)

// Identity kinds.
const (
	KindAdmin     = "admin"     // the registry's admin user (name = registry name)
	KindToken     = "token"     // a token with a scope map
	KindAnonymous = "anonymous" // nobody, where anonymous pull is enabled
	KindPrincipal = "principal" // a management principal (its role's data-plane rights)
	KindIdentity  = "identity"  // a user-assigned identity (name = principal id; its role assignments' rights)
)

// NullUser is the user name under which the password is a refresh token,
// as in ACR (00000000-0000-0000-0000-000000000000).
const NullUser = "00000000-0000-0000-0000-000000000000"

// Token statuses.
const (
	StatusEnabled  = "enabled"
	StatusDisabled = "disabled"
)

// Identity is an authenticated caller of one registry.
type Identity struct {
	Registry string
	Kind     string
	Name     string
	// Stamp names the credential used (for refresh tokens): a changed
	// password changes it.
	Stamp string
	Perms Perms
}

// errAnonymousOff is a token request without credentials where anonymous
// pull is off: a bad credential (401) whose message says what is missing.
const errAnonymousOff = credentialError("authentication required: no credentials were sent, and anonymous pull is disabled on this registry")

// credentialError is a bad credential with its own message.
type credentialError string

func (e credentialError) Error() string      { return string(e) }
func (credentialError) Is(target error) bool { return target == errBadCredentials }

var (
	errBadCredentials = errors.New("invalid username or password")
	errThrottled      = errors.New("too many failed attempts")
	// errSecretExpired: an identity's right client secret, past its end.
	// To the caller a bad credential (401), which may say why (the caller
	// knew the secret); the audit log tells it apart.
	errSecretExpired = errors.New("the client secret has expired")
)

func stampOf(hash string) string {
	s := sha256.Sum256([]byte(hash))
	return hex.EncodeToString(s[:8])
}

// dummyHash is checked when the user is unknown, so that a wrong user
// name costs the same time as a wrong password: it has the current
// parameters, so checking it runs the full argon2id. Its all-zero key
// matches no password in practice, and it is built without hashing: an
// argon2id run at package init cost every process 19 MiB of heap.
var dummyHash = encodeHash(make([]byte, saltLen), make([]byte, argonKeyLen))

// verifiedCache remembers (hash, password) pairs that verified, so a
// client sending Basic credentials on every request pays the slow hash
// once. Keys are SHA-256 of hash and password: the password itself is not
// kept, and a changed password (new hash, new salt) never matches.
type verifiedCache struct {
	ttl time.Duration
	// slots bounds concurrent argon2id checks (19 MiB each), so a burst
	// of first logins cannot take the server's memory.
	slots chan struct{}
	mu    sync.Mutex
	m     map[[32]byte]time.Time
}

// maxConcurrentChecks is the number of argon2id checks run at once.
const maxConcurrentChecks = 4

func newVerifiedCache(ttl time.Duration) *verifiedCache {
	return &verifiedCache{ttl: ttl, slots: make(chan struct{}, maxConcurrentChecks), m: map[[32]byte]time.Time{}}
}

const maxVerified = 10_000

func (c *verifiedCache) key(hash, password string) [32]byte {
	return sha256.Sum256([]byte(hash + "\x00" + password))
}

func (c *verifiedCache) check(ctx context.Context, hash, password string, now time.Time) (bool, error) {
	k := c.key(hash, password)
	c.mu.Lock()
	until, ok := c.m[k]
	c.mu.Unlock()
	if ok && now.Before(until) {
		return true, nil
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	good, err := CheckPassword(hash, password)
	<-c.slots
	if err != nil || !good {
		return false, err
	}
	c.mu.Lock()
	if len(c.m) >= maxVerified {
		c.m = map[[32]byte]time.Time{}
	}
	c.m[k] = now.Add(c.ttl)
	c.mu.Unlock()
	return true, nil
}

// checkPassword authenticates user:password against registry, throttled
// per source address and per identity.
func (s *Service) checkPassword(ctx context.Context, registry, user, password, remote string) (Identity, error) {
	ipKey, idKey := "ip:"+remote, "id:"+registry+"/"+strings.ToLower(user)
	// The cluster's counts, read before the secret is checked: a password
	// may not be tried past the budget on another replica.
	if _, blocked := s.throttle.Check(ctx, ipKey, idKey); blocked {
		s.audit(ctx, registry, user, remote, "throttled")
		return Identity{}, errThrottled
	}
	id, err := s.lookupPassword(ctx, registry, user, password)
	if errors.Is(err, errBadCredentials) {
		s.throttle.Fail(ctx, ipKey, idKey)
		result := "invalid credentials"
		if errors.Is(err, errSecretExpired) {
			result = "client secret expired"
		}
		s.audit(ctx, registry, user, remote, result)
	}
	return id, err
}

// audit records a failed login: a log line and a row of the audit table
// (the user name given, never the password).
func (s *Service) audit(ctx context.Context, registry, user, remote, result string) {
	s.log.WarnContext(ctx, "authentication failed", "registry", registry, "user", user, "remote", remote, "result", result)
	e := metadata.AuditEntry{At: armtime.Of(s.now().UTC()), Who: user, Action: "login", Resource: "registries/" + registry, Result: result, Remote: remote}
	if err := s.store.AddAudit(ctx, e); err != nil {
		s.log.ErrorContext(ctx, "audit log write failed", "err", err)
	}
}

func (s *Service) lookupPassword(ctx context.Context, registry, user, password string) (Identity, error) {
	if user == NullUser {
		return s.fromRefreshToken(ctx, registry, password)
	}
	if user == "" || password == "" {
		return Identity{}, errBadCredentials
	}
	if s.principals != nil {
		name, perms, ok, err := s.principals.VerifyPrincipal(ctx, registry, password)
		if err != nil {
			return Identity{}, err
		}
		if ok && strings.EqualFold(name, user) {
			return Identity{Registry: registry, Kind: KindPrincipal, Name: name, Perms: perms}, nil
		}
	}
	checked := false
	if id, ok, err := s.identitySecret(ctx, registry, user, password, &checked); err != nil || ok {
		return id, err
	}
	if strings.EqualFold(user, registry) {
		acc, err := s.store.GetRegistrySettings(ctx, registry)
		if err != nil && !errors.Is(err, metadata.ErrNotFound) {
			return Identity{}, err
		}
		if acc.AdminEnabled {
			for _, h := range acc.AdminPasswords {
				if h == "" {
					continue
				}
				checked = true
				if ok, err := s.verified.check(ctx, h, password, s.now()); err != nil {
					return Identity{}, fmt.Errorf("admin password hash: %w", err)
				} else if ok {
					return Identity{Registry: registry, Kind: KindAdmin, Name: registry, Stamp: stampOf(h), Perms: AllPerms}, nil
				}
			}
		}
	}
	tk, err := s.store.GetToken(ctx, registry, user)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return Identity{}, err
	}
	if err == nil && tk.Status == StatusEnabled {
		for _, p := range tk.Passwords {
			if p.Hash == "" || (!p.Expiry.IsZero() && !s.now().Before(p.Expiry)) {
				continue
			}
			checked = true
			ok, err := s.verified.check(ctx, p.Hash, password, s.now())
			if err != nil {
				return Identity{}, fmt.Errorf("token password hash: %w", err)
			}
			if ok {
				perms, err := s.scopeMapPerms(ctx, registry, tk.ScopeMap)
				if err != nil {
					return Identity{}, err
				}
				return Identity{Registry: registry, Kind: KindToken, Name: tk.Name, Stamp: stampOf(p.Hash), Perms: perms}, nil
			}
		}
	}
	if !checked {
		_, _ = s.verified.check(ctx, dummyHash, password+"\x00", s.now())
	}
	return Identity{}, errBadCredentials
}

// identitySecret checks user:password as an identity's client id and
// client secret (service-principal style login); checked is set when a
// secret was compared.
func (s *Service) identitySecret(ctx context.Context, registry, user, password string, checked *bool) (Identity, bool, error) {
	if s.identities == nil || !isUUID(user) {
		return Identity{}, false, nil
	}
	u, err := s.identities.GetIdentityByClientID(ctx, user)
	if errors.Is(err, metadata.ErrNotFound) || (err == nil && u.SecretHash == "") {
		return Identity{}, false, nil
	}
	if err != nil {
		return Identity{}, false, err
	}
	*checked = true
	ok, err := s.verified.check(ctx, u.SecretHash, password, s.now())
	if err != nil {
		return Identity{}, false, fmt.Errorf("identity secret hash: %w", err)
	}
	if !ok {
		return Identity{}, false, nil
	}
	if secretExpired(u, s.now()) {
		return Identity{}, false, fmt.Errorf("%w: %w at %s (reset it: arca identity credential reset)", errBadCredentials, errSecretExpired,
			u.SecretExpires.UTC().Format(time.RFC3339))
	}
	perms, found, err := s.identityPerms(ctx, registry, u.PrincipalID)
	if err != nil || !found {
		return Identity{}, false, err
	}
	return Identity{Registry: registry, Kind: KindIdentity, Name: u.PrincipalID, Stamp: stampOf(u.SecretHash), Perms: perms}, true, nil
}

// secretExpired reports whether u's client secret has passed its end
// (a secret without one never does).
func secretExpired(u metadata.UserIdentity, now time.Time) bool {
	return !u.SecretExpires.IsZero() && !now.Before(u.SecretExpires)
}

// isUUID reports whether s has the 8-4-4-4-12 hex form of a client id.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'):
			return false
		}
	}
	return true
}

// scopeMapPerms resolves a token's scope map (system or user-defined).
func (s *Service) scopeMapPerms(ctx context.Context, registry, name string) (Perms, error) {
	if name == "" {
		return nil, nil
	}
	var actions []string
	if sm, ok := LookupSystemScopeMap(name); ok {
		actions = sm.Actions
	} else {
		m, err := s.store.GetScopeMap(ctx, registry, name)
		if errors.Is(err, metadata.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		actions = m.Actions
	}
	p, err := ParseScopeMapActions(actions)
	if err != nil {
		return nil, fmt.Errorf("scope map %s: %w", name, err)
	}
	return p, nil
}

// current re-reads an identity as it is now: nil perms (and ok false) if
// it no longer exists, is disabled or lost the credential of stamp (when
// stamp is not empty).
func (s *Service) current(ctx context.Context, registry, kind, name, stamp string) (Identity, bool, error) {
	id := Identity{Registry: registry, Kind: kind, Name: name, Stamp: stamp}
	switch kind {
	case KindAnonymous:
		on, err := s.anonymousPull(ctx, registry)
		if err != nil || !on {
			return id, false, err
		}
		id.Perms = anonymousPerms
		return id, true, nil
	case KindAdmin:
		acc, err := s.store.GetRegistrySettings(ctx, registry)
		if err != nil && !errors.Is(err, metadata.ErrNotFound) {
			return id, false, err
		}
		if !acc.AdminEnabled || (stamp != "" && stamp != stampOf(acc.AdminPasswords[0]) && stamp != stampOf(acc.AdminPasswords[1])) {
			return id, false, nil
		}
		id.Perms = AllPerms
		return id, true, nil
	case KindPrincipal:
		if s.principals == nil {
			return id, false, nil
		}
		perms, ok, err := s.principals.PrincipalPerms(ctx, registry, name)
		id.Perms = perms
		return id, ok, err
	case KindIdentity:
		if stamp != "" && s.identities != nil {
			// Signed in with a client secret: a reset secret ends it.
			u, err := s.identities.GetIdentityByPrincipal(ctx, name)
			if errors.Is(err, metadata.ErrNotFound) {
				return id, false, nil
			}
			if err != nil {
				return id, false, err
			}
			if u.SecretHash == "" || stampOf(u.SecretHash) != stamp || secretExpired(u, s.now()) {
				return id, false, nil
			}
		}
		perms, ok, err := s.identityPerms(ctx, registry, name)
		id.Perms = perms
		return id, ok, err
	case KindToken:
		tk, err := s.store.GetToken(ctx, registry, name)
		if errors.Is(err, metadata.ErrNotFound) {
			return id, false, nil
		}
		if err != nil {
			return id, false, err
		}
		if tk.Status != StatusEnabled {
			return id, false, nil
		}
		if stamp != "" {
			found := false
			for _, p := range tk.Passwords {
				if p.Hash != "" && stampOf(p.Hash) == stamp && (p.Expiry.IsZero() || s.now().Before(p.Expiry)) {
					found = true
				}
			}
			if !found {
				return id, false, nil
			}
		}
		perms, err := s.scopeMapPerms(ctx, registry, tk.ScopeMap)
		if err != nil {
			return id, false, err
		}
		id.Perms = perms
		return id, true, nil
	}
	return id, false, nil
}

// anonymousPerms are what anonymous pull grants: read on every repository.
var anonymousPerms = Perms{{Pattern: "*", Actions: []Action{Pull, MetadataRead}}}

const refreshPrefix = "arca_rt_"

func hashRefresh(token string) string {
	s := sha256.Sum256([]byte(token))
	return hex.EncodeToString(s[:])
}

// newRefreshToken issues a refresh token for id.
func (s *Service) newRefreshToken(ctx context.Context, id Identity) (string, error) {
	sec, err := GenerateSecret()
	if err != nil {
		return "", err
	}
	tok := refreshPrefix + sec
	now := s.now()
	err = s.store.PutRefreshToken(ctx, metadata.RefreshToken{Hash: hashRefresh(tok), Registry: id.Registry, Kind: id.Kind,
		Subject: id.Name, Stamp: id.Stamp, Created: now, Expires: now.Add(s.refreshTTL)})
	if err != nil {
		return "", err
	}
	return tok, nil
}

// fromRefreshToken authenticates a refresh token: unexpired, not revoked,
// issued by this registry, and its identity still holding the credential
// it was issued for.
func (s *Service) fromRefreshToken(ctx context.Context, registry, token string) (Identity, error) {
	if !strings.HasPrefix(token, refreshPrefix) {
		return Identity{}, errBadCredentials
	}
	rt, err := s.store.GetRefreshToken(ctx, hashRefresh(token))
	if errors.Is(err, metadata.ErrNotFound) {
		return Identity{}, errBadCredentials
	}
	if err != nil {
		return Identity{}, err
	}
	if rt.Revoked || !s.now().Before(rt.Expires) || !strings.EqualFold(rt.Registry, registry) {
		return Identity{}, errBadCredentials
	}
	id, ok, err := s.current(ctx, registry, rt.Kind, rt.Subject, rt.Stamp)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		return Identity{}, errBadCredentials
	}
	return id, nil
}
