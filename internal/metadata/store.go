// Package metadata records what the registry knows: repositories, manifests
// and the references between them, tags, blob links, and (from the
// management plane) cache rules and credential sets. Store is the contract;
// SQLite (embedded, the default) and PostgreSQL implement it. Everything
// shared between replicas lives here, never in process memory.
package metadata

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/rules"
	"github.com/opencontainers/go-digest"
)

// Errors every implementation returns (wrapped) for the same conditions.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict: a write would break a uniqueness rule (a second rule
	// on a target, an upload id in use).
	ErrConflict = errors.New("conflict")
	// ErrSchemaNewer: the database was migrated by a newer arca.
	ErrSchemaNewer = errors.New("database schema is newer than this arca")
)

// Store is the metadata store the server wires. Consumers depend on their
// own small interfaces, which Store satisfies.
type Store interface {
	// Backend names the engine ("sqlite", "postgres").
	Backend() string
	Ping(ctx context.Context) error
	// SchemaVersion is the version the database is migrated to.
	SchemaVersion(ctx context.Context) (int, error)
	Close() error

	// Content.
	LinkBlob(ctx context.Context, registry, repo string, d digest.Digest, size int64) error
	BlobSize(ctx context.Context, registry, repo string, d digest.Digest) (int64, error)
	UnlinkBlob(ctx context.Context, registry, repo string, d digest.Digest) error
	References(ctx context.Context, registry, repo string, d digest.Digest) (bool, error)
	MissingRefs(ctx context.Context, registry, repo string, refs []Ref) ([]Ref, error)
	PutManifest(ctx context.Context, m Manifest, tags ...string) error
	GetManifest(ctx context.Context, registry, repo string, d digest.Digest) (Manifest, error)
	DeleteManifest(ctx context.Context, registry, repo string, d digest.Digest) error
	Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]Referrer, error)
	GetTag(ctx context.Context, registry, repo, tag string) (Tag, error)
	TouchTag(ctx context.Context, registry, repo, tag string) error
	DeleteTag(ctx context.Context, registry, repo, tag string) error
	ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error)
	ListRepositories(ctx context.Context, registry, last string, n int) ([]string, bool, error)
	ListManifests(ctx context.Context, registry, repo string, after digest.Digest, n int) ([]digest.Digest, bool, error)
	ListRepoBlobs(ctx context.Context, registry, repo string, after digest.Digest, n int) ([]digest.Digest, bool, error)
	RepositoryExists(ctx context.Context, registry, repo string) (bool, error)
	MarkPushed(ctx context.Context, registry, repo string) error
	CreateUpload(ctx context.Context, registry, repo, id string) error
	UploadExists(ctx context.Context, registry, repo, id string) (bool, error)
	DeleteUpload(ctx context.Context, id string) error
	// LoadUploadState and SaveUploadState keep a session's progress (see
	// content.Writer); a save is conditional on the size it started from.
	LoadUploadState(ctx context.Context, id string) (int64, []byte, error)
	SaveUploadState(ctx context.Context, id string, from, size int64, state []byte) error
	Usage(ctx context.Context) ([]RepoUsage, error)
	ListBlobs(ctx context.Context, after digest.Digest, n int) ([]BlobRef, bool, error)

	// Management plane.
	SyncRegistries(ctx context.Context, regs []RegistryRecord) error
	RulesGeneration(ctx context.Context, registry string) (int64, error)
	UpdateRules(ctx context.Context, registry string, fn func(RulesTx) error) error
	ListCacheRules(ctx context.Context, registry string) ([]rules.Rule, error)
	ListCacheRulesPage(ctx context.Context, registry, after string, n int) ([]rules.Rule, bool, error)
	GetCacheRule(ctx context.Context, registry, name string) (rules.Rule, error)
	SetCacheRuleSyncStatus(ctx context.Context, registry, name string, st rules.SyncStatus) error
	GetCredentialSet(ctx context.Context, registry, name string) (rules.CredentialSet, error)
	ListCredentialSetsPage(ctx context.Context, registry, after string, n int) ([]rules.CredentialSet, bool, error)
	SetCredentialSetHealth(ctx context.Context, registry string, checked rules.CredentialSet, h rules.Health) (bool, error)
	CredentialHealth(ctx context.Context) ([]CredentialHealthRow, error)
	PutOperation(ctx context.Context, op Operation) error
	GetOperation(ctx context.Context, id string) (Operation, error)

	// Active sync.
	ActiveSyncRules(ctx context.Context) ([]RuleRef, error)
	AcquireSyncLease(ctx context.Context, registry, rule, holder string, ttl time.Duration) (bool, error)
	ReleaseSyncLease(ctx context.Context, registry, rule, holder string) error
	GetSyncRun(ctx context.Context, registry, rule string) (SyncRun, error)
	PutSyncRun(ctx context.Context, r SyncRun) error
	GetSyncTag(ctx context.Context, registry, rule, repo, tag string) (SyncTag, error)
	PutSyncTag(ctx context.Context, st SyncTag) error
	SyncTagErrors(ctx context.Context, registry, rule string, n int) ([]SyncTag, error)
	CountSyncTagErrors(ctx context.Context, registry, rule string) (int, error)

	// Upstream rate limits and hosts.
	RecordRateLimit(ctx context.Context, source string, rl RateLimit) error
	GetRateLimit(ctx context.Context, source string) (RateLimit, error)
	LoginServers(ctx context.Context) ([]string, error)

	// Registries as resources.
	GetRegistrySettings(ctx context.Context, registry string) (RegistrySettings, error)
	UpdateRegistrySettings(ctx context.Context, registry string, fn func(*RegistrySettings) error) error
	CreateRegistry(ctx context.Context, r RegistryRecord, set RegistrySettings) error
	SetRegistryHosts(ctx context.Context, name string, hosts []string) error
	ManagedRegistries(ctx context.Context) ([]RegistryRecord, error)
	DeleteRegistry(ctx context.Context, name string) error

	// Upload sessions with an owner (quotas, lifetime, the janitor).
	CreateOwnedUpload(ctx context.Context, registry, repo, id, owner string, max int, maxAge time.Duration) error
	UploadStarted(ctx context.Context, registry, repo, id string) (time.Time, bool, error)
	UploadsBefore(ctx context.Context, cutoff time.Time) ([]UploadRef, error)

	// Garbage collection (gc.go; the invariant is in docs/architecture.md).
	PrepareBlob(ctx context.Context, d digest.Digest, size int64) error
	GCBlobs(ctx context.Context, after digest.Digest, n int) ([]GCBlob, bool, error)
	MarkBlobs(ctx context.Context, ds []digest.Digest, at time.Time) (int, error)
	ClaimBlobs(ctx context.Context, ds []digest.Digest, markedBefore, at time.Time) ([]BlobRef, error)
	ClaimOrphans(ctx context.Context, refs []BlobRef, at time.Time) ([]BlobRef, error)
	KnownBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error)
	ForgetBlobs(ctx context.Context, ds []digest.Digest, claimedAt time.Time) (int, error)
	UntaggedManifests(ctx context.Context, registry string, before time.Time, after ManifestKey, n int) ([]ManifestKey, bool, error)
	DeleteUntaggedManifest(ctx context.Context, registry, repo string, d digest.Digest, before time.Time) (bool, error)
	GetRetentionPolicy(ctx context.Context, registry string) (RetentionPolicy, error)
	PutRetentionPolicy(ctx context.Context, p RetentionPolicy) error
	EnabledRetentionPolicies(ctx context.Context) ([]RetentionPolicy, error)

	// Access control: scope maps, tokens, signing keys, refresh tokens,
	// management principals, audit log.
	GetScopeMap(ctx context.Context, registry, name string) (ScopeMap, error)
	ListScopeMaps(ctx context.Context, registry string) ([]ScopeMap, error)
	PutScopeMap(ctx context.Context, registry string, m ScopeMap) (bool, error)
	DeleteScopeMap(ctx context.Context, registry, name string) error
	GetToken(ctx context.Context, registry, name string) (Token, error)
	ListTokens(ctx context.Context, registry string) ([]Token, error)
	UpdateToken(ctx context.Context, registry, name string, fn func(tk *Token, created bool) error) (bool, error)
	DeleteToken(ctx context.Context, registry, name string) error
	SigningKeys(ctx context.Context) ([]SigningKey, error)
	AddSigningKey(ctx context.Context, k SigningKey, notAfter, pruneBefore time.Time) error
	PutRefreshToken(ctx context.Context, t RefreshToken) error
	GetRefreshToken(ctx context.Context, hash string) (RefreshToken, error)
	RevokeRefreshTokens(ctx context.Context, registry, kind, subject string) error
	GetPrincipal(ctx context.Context, name string) (Principal, error)
	ListPrincipals(ctx context.Context) ([]Principal, error)
	PutPrincipal(ctx context.Context, p Principal) error
	DeletePrincipal(ctx context.Context, name string) error
	AddAudit(ctx context.Context, e AuditEntry) error
	ListAudit(ctx context.Context, since time.Time, n int) ([]AuditEntry, error)

	// Per-rule statistics in time buckets (the portal's history).
	AddStats(ctx context.Context, rows []StatRow) error
	ListStats(ctx context.Context, registry string, since time.Time) ([]StatRow, error)
	PruneStats(ctx context.Context, before time.Time) error
	// User-assigned identities, federated credentials, role assignments.
	GetIdentity(ctx context.Context, rg, name string) (UserIdentity, error)
	GetIdentityByPrincipal(ctx context.Context, principalID string) (UserIdentity, error)
	ListIdentities(ctx context.Context, rg string) ([]UserIdentity, error)
	PutIdentity(ctx context.Context, u UserIdentity) (UserIdentity, bool, error)
	DeleteIdentity(ctx context.Context, rg, name string) error
	// Identity client secrets (identity2): lookup by client id, and the
	// secret's hash replaced (rotation) or removed.
	GetIdentityByClientID(ctx context.Context, clientID string) (UserIdentity, error)
	SetIdentitySecret(ctx context.Context, rg, name, hash string, at, expires time.Time) error
	GetFederatedCredential(ctx context.Context, rg, identity, name string) (FederatedCredential, error)
	ListFederatedCredentials(ctx context.Context, rg, identity string) ([]FederatedCredential, error)
	FederatedCredentialsByIssuer(ctx context.Context, issuer string) ([]FederatedCredential, error)
	PutFederatedCredential(ctx context.Context, f FederatedCredential) (bool, error)
	DeleteFederatedCredential(ctx context.Context, rg, identity, name string) error
	ListRoleAssignments(ctx context.Context) ([]RoleAssignment, error)
	RoleAssignmentsOf(ctx context.Context, principalID string) ([]RoleAssignment, error)
	GetRoleAssignment(ctx context.Context, name string) (RoleAssignment, error)
	PutRoleAssignment(ctx context.Context, a RoleAssignment) (RoleAssignment, bool, error)
	DeleteRoleAssignment(ctx context.Context, name string) error

	// Storage lifecycle: access times (batched), usage per registry,
	// eviction of cached content (lifecycle.go).
	RecordPulls(ctx context.Context, pulls []Pull) error
	RepositoryPulledAt(ctx context.Context, registry, repo string) (time.Time, error)
	RegistryUsage(ctx context.Context, registry string) ([]RepoUsage, error)
	PushedBytes(ctx context.Context, registry string) (int64, error)
	CachedItems(ctx context.Context, registry string, before time.Time, after CachedCursor, n int) ([]CachedItem, error)
	EvictCached(ctx context.Context, registry string, it CachedItem, dryRun bool) (int64, error)

	// Retention: what active sync keeps current is exempt (syncretention.go).
	SyncKeptManifests(ctx context.Context, registry, rule string, referrers bool) ([]ManifestKey, error)

	// Cluster: one upstream fetch per blob across replicas (fetchleases.go).
	AcquireFetchLease(ctx context.Context, key, holder, addr string, ttl time.Duration) (FetchLease, bool, error)
	ReleaseFetchLease(ctx context.Context, key, holder string) error

	// Cluster: a fetch's outcome shown briefly to the replicas that waited
	// for it, e.g. an upstream 404 for a manifest (fetchleases.go).
	SettleFetchLease(ctx context.Context, key, holder, outcome string, ttl time.Duration) error

	// Repository details and deletion, for /acr/v1/ (repoinfo.go).
	RepositoryInfo(ctx context.Context, registry, repo string) (RepoInfo, error)
	ListTagInfo(ctx context.Context, registry, repo string, q InfoQuery) ([]TagInfo, bool, error)
	ListManifestInfo(ctx context.Context, registry, repo string, q InfoQuery) ([]ManifestInfo, bool, error)
	DeleteRepository(ctx context.Context, registry, repo string) ([]digest.Digest, []string, error)

	// Web portal browser sessions, shared by every replica (portalsessions.go).
	PutPortalSession(ctx context.Context, p PortalSession) error
	GetPortalSession(ctx context.Context, idHash string) (PortalSession, error)
	TouchPortalSession(ctx context.Context, idHash string, at time.Time) error
	DeletePortalSession(ctx context.Context, idHash string) error
	PrunePortalSessions(ctx context.Context, cutoff time.Time) (int, error)

	// One manifest's details for /acr/v1/, and its attributes worked out
	// after it was stored (repoinfo.go).
	ManifestInfo(ctx context.Context, registry, repo string, d digest.Digest) (ManifestInfo, error)
	SetManifestAttrs(ctx context.Context, registry, repo string, d digest.Digest, a ManifestAttrs) error

	// Cluster: 429 hold-backs shared by the replicas (upstreamholds.go).
	HoldUpstream(ctx context.Context, host string, until time.Time) error
	UpstreamHolds(ctx context.Context, now time.Time) (map[string]time.Time, error)

	// Cluster: failed-login throttling shared by the replicas (loginfailures.go).
	AddLoginFailure(ctx context.Context, key string, window time.Duration, now time.Time) (LoginFailures, error)
	GetLoginFailures(ctx context.Context, keys []string, now time.Time) (map[string]LoginFailures, error)

	// The last operation of a kind on a registry (`arca gc show`), from the
	// operations PutOperation records (rules_tx.go).
	LatestOperation(ctx context.Context, registry, kind string) (Operation, error)
}

// RulesTx is one write transaction over a registry's cache rules and
// credential sets. The management API validates and writes inside it, so
// checks (overlap, limits, references) and the write see the same state
// even with concurrent requests or replicas: transactions of one registry
// run one at a time on every implementation. Every write moves the
// registry's rules generation in the same transaction.
type RulesTx interface {
	CacheRules() ([]rules.Rule, error)
	CacheRule(name string) (rules.Rule, bool, error)
	// PutCacheRule creates or replaces r (by name, ignoring case);
	// ErrConflict if another rule has r's target.
	PutCacheRule(r rules.Rule) error
	DeleteCacheRule(name string) (bool, error)
	CredentialSet(name string) (rules.CredentialSet, bool, error)
	PutCredentialSet(c rules.CredentialSet) error
	DeleteCredentialSet(name string) (bool, error)
	// RepositoryExists reports whether repo holds pushed content.
	RepositoryExists(repo string) (bool, error)
	// RepositoryUnder returns the first repository with pushed content
	// whose name starts with prefix ("" = any).
	RepositoryUnder(prefix string) (string, bool, error)
	// PutOperation records op, visible exactly when the change is.
	PutOperation(op Operation) error
}

// Open opens the store spec names: "" for the embedded SQLite database
// under dataDir, a postgres:// or postgresql:// URL (any libpq URL) for
// PostgreSQL. Both migrate at open, under a lock.
func Open(ctx context.Context, spec, dataDir string) (Store, error) {
	switch {
	case spec == "":
		return OpenSQLite(ctx, filepath.Join(dataDir, DBFile))
	case strings.HasPrefix(spec, "postgres://"), strings.HasPrefix(spec, "postgresql://"):
		return OpenPostgres(ctx, spec)
	}
	return nil, fmt.Errorf("metadata: unsupported store %q: want a postgres:// URL, or none for the embedded database", scheme(spec))
}

// DBFile is the embedded database's file name under the data directory.
const DBFile = "arca.db"

// scheme returns spec's scheme only (spec may carry a password).
func scheme(spec string) string {
	if i := strings.Index(spec, "://"); i >= 0 {
		return spec[:i] + "://..."
	}
	return "(not a URL)"
}
