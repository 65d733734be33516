// Package secrets resolves secret references (Azure Key Vault secret URIs,
// HashiCorp Vault / OpenBao KV v2 paths, files, environment variables) to
// their values at the moment they are needed. It never stores values beyond
// a short in-memory cache, so a rotated secret takes effect without editing
// whatever holds the reference. Errors name the reference, never the value.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
)

// DefaultTTL is how long a resolved value is reused: short enough that a
// rotation is seen within minutes, long enough not to hammer the vault on
// every upstream login.
const DefaultTTL = 5 * time.Minute

// Options configure a Resolver. The zero value works: Key Vault through
// DefaultAzureCredential, Vault address and token from VAULT_ADDR/VAULT_TOKEN.
type Options struct {
	// TTL is how long a value is cached per reference. 0 means DefaultTTL;
	// a negative TTL disables caching.
	TTL time.Duration
	// Getenv reads environment variables (env:// references, VAULT_*,
	// AZURE_*). Defaults to os.Getenv.
	Getenv func(string) string
	// ReadFile reads file:// references. Defaults to os.ReadFile.
	ReadFile func(string) ([]byte, error)
	// HTTPClient carries Key Vault and Vault requests (and Azure token
	// requests). Tests point it at loopback servers. Defaults to a client
	// with a 30s timeout.
	HTTPClient *http.Client
	KeyVault   KeyVaultOptions
	Vault      VaultOptions
	// Now is the clock for the cache (tests). Defaults to time.Now.
	Now func() time.Time
}

// KeyVaultOptions select how arca authenticates to Azure Key Vault.
type KeyVaultOptions struct {
	// Credential, when set, is used as is (tests, embedding programs).
	Credential azcore.TokenCredential
	// TenantID, ClientID and ClientSecret select a service principal.
	TenantID     string
	ClientID     string
	ClientSecret string
	ResourceID   string
	// ManagedIdentity selects the managed identity (ClientID or
	// ResourceID, if set, picks a user-assigned one). Otherwise DefaultAzureCredential is used
	// (environment, workload identity, managed identity, Azure CLI).
	ManagedIdentity bool
	// DisableChallengeResourceVerification turns off azsecrets' check that
	// the 401 challenge's resource matches the vault's domain. Only for
	// vaults behind a custom domain; keep it off otherwise.
	DisableChallengeResourceVerification bool
}

// KeyVaultIdentity names the Azure identity that reads a Key Vault
// secret, so that each credential set can be granted `get` on its own
// vault instead of sharing the server's credential. The zero value is the
// server-wide credential of KeyVaultOptions.
type KeyVaultIdentity struct {
	// ManagedIdentity selects the host's managed identity: the
	// system-assigned one, or the user-assigned one ClientID or
	// ResourceID (its ARM id) names.
	ManagedIdentity bool
	ClientID        string
	ResourceID      string
}

// UserAssigned is the Key Vault identity of a credential set that names
// the user-assigned managed identity resourceID ("" is the server-wide
// credential).
func UserAssigned(resourceID string) KeyVaultIdentity {
	if resourceID == "" {
		return KeyVaultIdentity{}
	}
	return KeyVaultIdentity{ManagedIdentity: true, ResourceID: resourceID}
}

// String names the identity in messages (it holds no secret).
func (id KeyVaultIdentity) String() string {
	switch {
	case id == KeyVaultIdentity{}:
		return "the server's Key Vault credential"
	case !id.ManagedIdentity:
		return "client " + id.ClientID
	case id.ResourceID != "":
		return "user-assigned managed identity " + id.ResourceID
	case id.ClientID != "":
		return "user-assigned managed identity with client id " + id.ClientID
	}
	return "the host's system-assigned managed identity"
}

// VaultOptions configure HashiCorp Vault / OpenBao access. Empty fields
// fall back to VAULT_ADDR, VAULT_TOKEN and VAULT_NAMESPACE (BAO_ADDR,
// BAO_TOKEN and BAO_NAMESPACE are read too).
type VaultOptions struct {
	Address   string
	Token     string
	Namespace string
}

// Resolver turns references into values. It is safe for concurrent use.
type Resolver struct {
	opts Options
	kv   *keyVault // the server-wide identity
	bao  *vaultKV

	mu    sync.Mutex
	kvs   map[KeyVaultIdentity]*keyVault // other identities, built on first use
	cache map[cacheKey]cached
}

// cacheKey keeps values read as one identity from being served to
// another: a vault that grants `get` to one must not leak to the other.
type cacheKey struct {
	id  KeyVaultIdentity
	ref string
}

type cached struct {
	value   string
	expires time.Time
}

// New returns a Resolver. It performs no I/O: credentials and clients are
// built on first use, so a server without Azure configuration can still
// resolve file and env references.
func New(opts Options) (*Resolver, error) {
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.ReadFile == nil {
		opts.ReadFile = os.ReadFile
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	kv, err := newKeyVault(opts.KeyVault, opts.HTTPClient)
	if err != nil {
		return nil, err
	}
	return &Resolver{
		opts:  opts,
		kv:    kv,
		bao:   newVaultKV(opts.Vault, opts.Getenv, opts.HTTPClient),
		kvs:   map[KeyVaultIdentity]*keyVault{},
		cache: map[cacheKey]cached{},
	}, nil
}

// Resolve returns the value ref points to. Errors name ref and the cause,
// never the value.
func (r *Resolver) Resolve(ctx context.Context, ref string) (string, error) {
	return r.ResolveAs(ctx, ref, KeyVaultIdentity{})
}

// ResolveAs is Resolve reading Key Vault references as id; other kinds of
// reference do not depend on an Azure identity.
func (r *Resolver) ResolveAs(ctx context.Context, ref string, id KeyVaultIdentity) (string, error) {
	p, err := Parse(ref)
	if err != nil {
		return "", err
	}
	if p.Kind != KindKeyVault {
		id = KeyVaultIdentity{}
	}
	key := cacheKey{id: id, ref: ref}
	if v, ok := r.fromCache(key); ok {
		return v, nil
	}
	v, err := r.fetch(ctx, p, id)
	if err != nil {
		if id != (KeyVaultIdentity{}) {
			return "", fmt.Errorf("resolve secret %s as %s: %w", ref, id, err)
		}
		return "", fmt.Errorf("resolve secret %s: %w", ref, err)
	}
	// An empty value is not cached: it is what a reader sees of a file
	// being rewritten in place (truncated, then written), and caching it
	// would pin a broken secret for the whole TTL.
	if v != "" {
		r.store(key, v)
	}
	return v, nil
}

// ListKeyVaultSecrets lists the enabled secrets of vault (a vault name or
// URL, see KeyVaultURL) as id, as ResolveAs would read them: names and
// version-less URIs, never values, at most max of them (truncated says
// there were more). Errors wrap ErrInvalidRef, ErrVaultNotFound,
// ErrVaultForbidden or ErrIdentityUnavailable where one fits.
func (r *Resolver) ListKeyVaultSecrets(ctx context.Context, vault string, id KeyVaultIdentity, max int) ([]SecretName, bool, error) {
	vaultURL, err := KeyVaultURL(vault)
	if err != nil {
		return nil, false, err
	}
	kv, err := r.keyVaultAs(id)
	if err != nil {
		return nil, false, kindError{ErrIdentityUnavailable, err}
	}
	names, truncated, err := kv.list(ctx, strings.ToLower(vaultURL), max)
	if err != nil {
		if id != (KeyVaultIdentity{}) {
			return nil, false, fmt.Errorf("list the secrets of %s as %s: %w", vaultURL, id, err)
		}
		return nil, false, fmt.Errorf("list the secrets of %s: %w", vaultURL, err)
	}
	return names, truncated, nil
}

// Forget drops ref from the cache, for a caller that saw the value rejected
// (a failed upstream login) and wants the next Resolve to fetch anew.
func (r *Resolver) Forget(ref string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.cache {
		if k.ref == ref {
			delete(r.cache, k)
		}
	}
}

func (r *Resolver) fetch(ctx context.Context, p Ref, id KeyVaultIdentity) (string, error) {
	switch p.Kind {
	case KindKeyVault:
		kv, err := r.keyVaultAs(id)
		if err != nil {
			return "", err
		}
		return kv.get(ctx, p)
	case KindVault:
		return r.bao.get(ctx, p)
	case KindFile:
		b, err := r.opts.ReadFile(p.File)
		if err != nil {
			return "", fmt.Errorf("read file: %w", err)
		}
		return trimNewline(string(b)), nil
	case KindEnv:
		v := r.opts.Getenv(p.Name)
		if v == "" {
			return "", fmt.Errorf("environment variable %s is not set or empty", p.Name)
		}
		return v, nil
	}
	return "", fmt.Errorf("unsupported reference kind %q", p.Kind)
}

// trimNewline removes one trailing newline: files written by `echo` or
// Kubernetes tooling often end in one that is not part of the secret.
func trimNewline(s string) string {
	if t, ok := strings.CutSuffix(s, "\r\n"); ok {
		return t
	}
	return strings.TrimSuffix(s, "\n")
}

// keyVaultAs returns the Key Vault reader for id: the server-wide one for
// the zero identity, else one per identity (each with its own credential
// and token cache).
func (r *Resolver) keyVaultAs(id KeyVaultIdentity) (*keyVault, error) {
	if id == (KeyVaultIdentity{}) {
		return r.kv, nil
	}
	if !id.ManagedIdentity {
		return nil, errors.New("key vault identity: only a managed identity can be chosen per credential set")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if kv, ok := r.kvs[id]; ok {
		return kv, nil
	}
	if id.ClientID != "" && id.ResourceID != "" {
		return nil, errors.New("key vault identity: name a managed identity by client id or by resource id, not both")
	}
	kv, err := newKeyVault(KeyVaultOptions{ManagedIdentity: true, ClientID: id.ClientID, ResourceID: id.ResourceID,
		DisableChallengeResourceVerification: r.opts.KeyVault.DisableChallengeResourceVerification}, r.opts.HTTPClient)
	if err != nil {
		return nil, err
	}
	r.kvs[id] = kv
	return kv, nil
}

func (r *Resolver) fromCache(key cacheKey) (string, bool) {
	if r.opts.TTL < 0 {
		return "", false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.cache[key]
	if !ok {
		return "", false
	}
	if !r.opts.Now().Before(c.expires) {
		delete(r.cache, key)
		return "", false
	}
	return c.value, true
}

func (r *Resolver) store(key cacheKey, v string) {
	if r.opts.TTL < 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cache[key] = cached{value: v, expires: r.opts.Now().Add(r.opts.TTL)}
}
