package cache

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/secrets"
	"github.com/arcacache/arca/internal/tracing"
	"github.com/arcacache/arca/internal/upstream"
)

// RuleStore is where cache rules and credential sets live (shared by all
// replicas).
type RuleStore interface {
	RulesGeneration(ctx context.Context, registry string) (int64, error)
	ListCacheRules(ctx context.Context, registry string) ([]rules.Rule, error)
	GetCredentialSet(ctx context.Context, registry, name string) (rules.CredentialSet, error)
}

// SecretResolver turns a secret reference into its value, at use time,
// reading Key Vault references as the given identity.
type SecretResolver interface {
	ResolveAs(ctx context.Context, ref string, id secrets.KeyVaultIdentity) (string, error)
}

// RuleSet resolves repositories to cache targets. It keeps an index per
// registry and rebuilds it when the store's rules generation moves; the
// generation is read at most once per RecheckEvery, and Invalidate (called
// by this replica's management API) forces a read at once.
type RuleSet struct {
	store        RuleStore
	secrets      SecretResolver
	identities   IdentityCredentials
	creds        CredentialCache
	recheckEvery time.Duration

	mu   sync.Mutex
	regs map[string]*regRules
}

type regRules struct {
	gen       int64
	checkedAt time.Time
	index     *rules.Index
	reverse   *reverseIndex
}

// IdentityCredentials are the upstream credentials of a rule's
// user-assigned identity (identity.Exchanger).
type IdentityCredentials interface {
	Credentials(identityID, loginServer string) func(context.Context) (string, string, error)
}

// UseIdentities makes rules with an identity authenticate as it; without
// it their upstream requests fail (never an anonymous pull).
func (s *RuleSet) UseIdentities(ic IdentityCredentials) { s.identities = ic }

// CredentialCache is the upstream client's cache of logins per credential
// key (upstream.Client).
type CredentialCache interface {
	ForgetCredentials(prefix string)
}

// UseCredentialCache makes a change of a registry's rules or credential
// sets (seen by every replica as a new rules generation) drop the
// upstream logins of its credential sets, so a rewritten set takes effect
// at the next upstream request rather than when the upstream refuses the
// old credentials.
func (s *RuleSet) UseCredentialCache(cc CredentialCache) { s.creds = cc }

// NewRuleSet returns a RuleSet over store.
func NewRuleSet(store RuleStore, secrets SecretResolver) *RuleSet {
	return &RuleSet{store: store, secrets: secrets, recheckEvery: time.Second, regs: map[string]*regRules{}}
}

// Invalidate makes the next lookup re-read the rules of registry.
func (s *RuleSet) Invalidate(registry string) {
	s.mu.Lock()
	delete(s.regs, registry)
	s.mu.Unlock()
	s.forgetLogins(registry)
}

// forgetLogins drops the upstream logins of registry's credential sets.
func (s *RuleSet) forgetLogins(registry string) {
	if s.creds != nil {
		s.creds.ForgetCredentials(rules.CredentialKey(registry, ""))
	}
}

func (s *RuleSet) load(ctx context.Context, registry string) (*regRules, error) {
	s.mu.Lock()
	cur := s.regs[registry]
	fresh := cur != nil && time.Since(cur.checkedAt) < s.recheckEvery
	s.mu.Unlock()
	if fresh {
		return cur, nil
	}
	gen, err := s.store.RulesGeneration(ctx, registry)
	if err != nil {
		return nil, fmt.Errorf("cache rules: %w", err)
	}
	var next *regRules
	if cur != nil && cur.gen == gen {
		// Published entries are never modified (readers hold them without
		// the lock): publish a copy with the new check time.
		c := *cur
		c.checkedAt = time.Now()
		next = &c
	} else {
		list, err := s.store.ListCacheRules(ctx, registry)
		if err != nil {
			return nil, fmt.Errorf("cache rules: %w", err)
		}
		next = &regRules{gen: gen, checkedAt: time.Now(), index: rules.NewIndex(list), reverse: newReverseIndex(list)}
		if cur != nil {
			s.forgetLogins(registry) // another replica changed the rules or sets
		}
	}
	s.mu.Lock()
	s.regs[registry] = next
	s.mu.Unlock()
	return next, nil
}

// Resolve returns the cache target serving repo in registry. With ns (the
// containerd mirror parameter, or "docker.io" for Docker's registry-mirrors)
// repo is an upstream path on host ns, mapped back through the rules.
func (s *RuleSet) Resolve(ctx context.Context, registry, repo, ns string) (Target, bool, error) {
	ctx, span := tracing.Start(ctx, "rule resolve", attribute.String("arca.repository", repo))
	t, ok, err := s.resolve(ctx, registry, repo, ns)
	if ok {
		span.SetAttributes(attribute.String("arca.rule", t.Rule))
	}
	tracing.End(span, err)
	return t, ok, err
}

func (s *RuleSet) resolve(ctx context.Context, registry, repo, ns string) (Target, bool, error) {
	rr, err := s.load(ctx, registry)
	if err != nil {
		return Target{}, false, err
	}
	var r *rules.Rule
	var up, local string
	if ns != "" {
		var ok bool
		r, up, local, ok = rr.reverse.match(ns, repo)
		if !ok {
			return Target{}, false, nil
		}
	} else {
		var ok bool
		r, up, ok = rr.index.Match(repo)
		if !ok {
			return Target{}, false, nil
		}
		local = repo
	}
	return s.target(registry, r, local, up), true, nil
}

// target is the one constructor of a Target, for pull-through (Resolve)
// and active sync (TargetFor) alike: the token cache and rate-limit
// observations are keyed by CredKey, which must not depend on the caller.
// up is "host/path" on the upstream.
func (s *RuleSet) target(registry string, r *rules.Rule, local, up string) Target {
	host, path, _ := strings.Cut(up, "/")
	t := Target{Rule: r.Name, Repo: local, Upstream: upstream.Repo{Host: host, Path: upstream.NormalizePath(host, path)}}
	if r.CredentialSet != "" {
		t.Upstream.CredKey = rules.CredentialKey(registry, r.CredentialSet)
		t.Upstream.Creds = s.credentials(registry, r.CredentialSet)
	} else if r.Identity != "" {
		t.Upstream.CredKey = "identity:" + strings.ToLower(r.Identity)
		t.Upstream.Creds = s.IdentityCredentials(r.Identity, host)
	}
	return t
}

// MirrorsHost reports whether some rule of registry has its source on
// host: a mirror request naming another registry (regctl names the host
// it was configured for, that is us) is not a mirror request for arca.
func (s *RuleSet) MirrorsHost(ctx context.Context, registry, host string) (bool, error) {
	rr, err := s.load(ctx, registry)
	if err != nil {
		return false, err
	}
	return rr.reverse.hosts[rules.CanonicalLoginServer(host)], nil
}

// IdentityCredentials returns the upstream credentials of identity id at
// host, as rule-backed pulls use them.
func (s *RuleSet) IdentityCredentials(id, host string) upstream.Credentials {
	if s.identities == nil {
		return func(context.Context) (string, string, error) {
			return "", "", fmt.Errorf("identity %s: this server obtains no identity tokens", id)
		}
	}
	return s.identities.Credentials(id, host)
}

// credentials resolves a credential set's secret references when the
// upstream asks for them, so rotated secrets apply without edits.
func (s *RuleSet) credentials(registry, name string) upstream.Credentials {
	return func(ctx context.Context) (string, string, error) {
		cs, err := s.store.GetCredentialSet(ctx, registry, name)
		if err != nil {
			return "", "", fmt.Errorf("credential set %s: %w", name, err)
		}
		if s.secrets == nil || cs.UsernameRef == "" || cs.PasswordRef == "" {
			return "", "", fmt.Errorf("credential set %s has no usable credentials", name)
		}
		c := cs
		id := secrets.UserAssigned(c.Identity)
		user, err := s.secrets.ResolveAs(ctx, c.UsernameRef, id)
		if err != nil {
			return "", "", fmt.Errorf("credential set %s username: %w", name, err)
		}
		pass, err := s.secrets.ResolveAs(ctx, c.PasswordRef, id)
		if err != nil {
			return "", "", fmt.Errorf("credential set %s password: %w", name, err)
		}
		return user, pass, nil
	}
}

// reverseIndex maps upstream repositories back to our repositories, for
// mirror requests that name the upstream (containerd's ?ns=).
type reverseIndex struct {
	static map[string]*rules.Rule // "host/path" -> rule with static target
	wild   map[string]*rules.Rule // "host" or "host/prefix" -> wildcard rule
	hosts  map[string]bool        // hosts of all sources
}

func newReverseIndex(list []rules.Rule) *reverseIndex {
	ix := &reverseIndex{static: map[string]*rules.Rule{}, wild: map[string]*rules.Rule{}, hosts: map[string]bool{}}
	for i := range list {
		r := &list[i]
		src, err := rules.ParseSource(r.Source)
		if err != nil {
			continue
		}
		host := rules.CanonicalLoginServer(src.LoginServer)
		ix.hosts[host] = true
		key := host
		switch {
		case src.Wildcard && src.Path != "":
			key += "/" + src.Path // a prefix, not a repository: no "library/"
		case src.Path != "":
			key += "/" + upstream.NormalizePath(host, src.Path)
		}
		if src.Wildcard {
			ix.wild[key] = r
		} else if _, dup := ix.static[key]; !dup {
			ix.static[key] = r
		}
	}
	return ix
}

// match maps upstream host/path to (rule, upstream, our repository).
func (ix *reverseIndex) match(host, path string) (*rules.Rule, string, string, bool) {
	host = rules.CanonicalLoginServer(host)
	path = upstream.NormalizePath(host, path)
	full := host + "/" + path
	if r, ok := ix.static[full]; ok {
		return r, full, r.Target, true
	}
	for p := full; ; {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			return nil, "", "", false
		}
		p = p[:i]
		r, ok := ix.wild[p]
		if !ok {
			continue
		}
		rest := full[len(p)+1:]
		tgt, err := rules.ParseTarget(r.Target)
		if err != nil {
			return nil, "", "", false
		}
		local := rest
		if tgt.Prefix != "" {
			local = tgt.Prefix + "/" + rest
		}
		return r, full, local, true
	}
}
