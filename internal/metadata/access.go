package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/armtime"
)

// schemaAccess holds data-plane access control: registry access settings
// (on the registries table), scope maps, tokens, JWT signing keys and
// refresh tokens. Passwords and refresh tokens are stored only as hashes.
var schemaAccess = []string{
	`ALTER TABLE registries ADD COLUMN admin_enabled INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE registries ADD COLUMN anonymous_pull INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE registries ADD COLUMN admin_password1 TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE registries ADD COLUMN admin_password2 TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE registries ADD COLUMN sku TEXT NOT NULL DEFAULT 'Standard'`,
	`ALTER TABLE registries ADD COLUMN tags TEXT NOT NULL DEFAULT '{}'`,
	`ALTER TABLE registries ADD COLUMN public_network_access TEXT NOT NULL DEFAULT 'Enabled'`,
	`ALTER TABLE registries ADD COLUMN data_endpoint_enabled INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE registries ADD COLUMN role_assignment_mode TEXT NOT NULL DEFAULT 'LegacyRegistryPermissions'`,
	`ALTER TABLE registries ADD COLUMN managed INTEGER NOT NULL DEFAULT 0`,
	`ALTER TABLE uploads ADD COLUMN owner TEXT NOT NULL DEFAULT ''`,
	`CREATE INDEX uploads_owner ON uploads(owner, created_at) WHERE owner <> ''`,
	`CREATE TABLE scope_maps (
	registry    TEXT NOT NULL,
	name        TEXT NOT NULL COLLATE NOCASE,
	description TEXT NOT NULL DEFAULT '',
	actions     TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	modified_at INTEGER NOT NULL,
	PRIMARY KEY (registry, name)
)`,
	`CREATE TABLE tokens (
	registry    TEXT NOT NULL,
	name        TEXT NOT NULL COLLATE NOCASE,
	scope_map   TEXT NOT NULL DEFAULT '',
	status      TEXT NOT NULL,
	passwords   TEXT NOT NULL DEFAULT '[]',
	created_at  INTEGER NOT NULL,
	modified_at INTEGER NOT NULL,
	PRIMARY KEY (registry, name)
)`,
	`CREATE TABLE signing_keys (
	kid        TEXT PRIMARY KEY,
	secret     BLOB NOT NULL,
	created_at INTEGER NOT NULL
)`,
	`CREATE TABLE refresh_tokens (
	hash       TEXT PRIMARY KEY,
	registry   TEXT NOT NULL,
	kind       TEXT NOT NULL,
	subject    TEXT NOT NULL,
	stamp      TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	expires_at INTEGER NOT NULL,
	revoked    INTEGER NOT NULL DEFAULT 0
)`,
	`CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at)`,
	`CREATE TABLE principals (
	name       TEXT PRIMARY KEY COLLATE NOCASE,
	role       TEXT NOT NULL,
	registry   TEXT NOT NULL DEFAULT '',
	salt       BLOB NOT NULL,
	hash       BLOB NOT NULL,
	created_at INTEGER NOT NULL
)`,
	`CREATE TABLE audit_log (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	at       INTEGER NOT NULL,
	who      TEXT NOT NULL,
	action   TEXT NOT NULL,
	resource TEXT NOT NULL,
	result   TEXT NOT NULL,
	remote   TEXT NOT NULL DEFAULT ''
)`,
	`CREATE INDEX audit_log_at ON audit_log(at)`,
}

// RegistrySettings are a registry's resource properties, data-plane
// access settings included.
type RegistrySettings struct {
	AdminEnabled  bool
	AnonymousPull bool
	// AdminPasswords are the argon2id hashes of the admin user's two
	// passwords ("" = not generated yet).
	AdminPasswords [2]string
	// SKU is Basic, Standard or Premium: recorded, changes nothing.
	SKU                 string
	Tags                map[string]string
	PublicNetworkAccess string // Enabled or Disabled
	DataEndpointEnabled bool
	RoleAssignmentMode  string
	// CacheQuota and StorageQuota bound the bytes of cached and of pushed
	// content (0: no quota).
	CacheQuota, StorageQuota int64
	Created                  time.Time
}

const settingsColumns = `admin_enabled, anonymous_pull, admin_password1, admin_password2, sku, tags, public_network_access, data_endpoint_enabled, role_assignment_mode, created_at, cache_quota, storage_quota`

func scanSettings(row *sql.Row) (RegistrySettings, error) {
	var a RegistrySettings
	var tags string
	var created int64
	err := row.Scan(&a.AdminEnabled, &a.AnonymousPull, &a.AdminPasswords[0], &a.AdminPasswords[1], &a.SKU, &tags,
		&a.PublicNetworkAccess, &a.DataEndpointEnabled, &a.RoleAssignmentMode, &created, &a.CacheQuota, &a.StorageQuota)
	if err := rowError(err, "registry settings"); err != nil {
		return a, err
	}
	a.Created = fromMicros(created)
	return a, jsonColumn(tags, &a.Tags, "registry tags")
}

// GetRegistrySettings returns registry's settings.
func (s *db) GetRegistrySettings(ctx context.Context, registry string) (RegistrySettings, error) {
	return scanSettings(s.r.QueryRowContext(ctx, `SELECT `+settingsColumns+` FROM registries WHERE name = $1`, strings.ToLower(registry)))
}

// UpdateRegistrySettings changes registry's settings in one transaction.
func (s *db) UpdateRegistrySettings(ctx context.Context, registry string, fn func(*RegistrySettings) error) error {
	registry = strings.ToLower(registry)
	return s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.d.lock(ctx, tx, "registry:"+registry); err != nil {
			return err
		}
		a, err := scanSettings(tx.QueryRowContext(ctx, `SELECT `+settingsColumns+` FROM registries WHERE name = $1`, registry))
		if err != nil {
			return err
		}
		if err := fn(&a); err != nil {
			return err
		}
		tags, _ := json.Marshal(a.Tags)
		if a.Tags == nil {
			tags = []byte("{}")
		}
		_, err = tx.ExecContext(ctx, `UPDATE registries SET admin_enabled = $1, anonymous_pull = $2, admin_password1 = $3, admin_password2 = $4,
			sku = $5, tags = $6, public_network_access = $7, data_endpoint_enabled = $8, role_assignment_mode = $9, cache_quota = $10, storage_quota = $11 WHERE name = $12`,
			b2i(a.AdminEnabled), b2i(a.AnonymousPull), a.AdminPasswords[0], a.AdminPasswords[1], a.SKU, string(tags),
			a.PublicNetworkAccess, b2i(a.DataEndpointEnabled), a.RoleAssignmentMode, a.CacheQuota, a.StorageQuota, registry)
		if err != nil {
			return fmt.Errorf("registry settings: %w", err)
		}
		return nil
	})
}

// CreateRegistry records a registry created through the management API
// (managed), with its settings; an existing row (say of a registry no
// longer configured) is taken over.
func (s *db) CreateRegistry(ctx context.Context, r RegistryRecord, set RegistrySettings) error {
	hosts, _ := json.Marshal(append([]string{}, r.Hosts...))
	tags, _ := json.Marshal(set.Tags)
	if set.Tags == nil {
		tags = []byte("{}")
	}
	_, err := s.w.ExecContext(ctx, `INSERT INTO registries(name, hosts, created_at, managed, admin_enabled, anonymous_pull, sku, tags, public_network_access, data_endpoint_enabled, role_assignment_mode, cache_quota, storage_quota)
		VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT(name) DO UPDATE SET hosts = excluded.hosts, managed = 1, admin_enabled = excluded.admin_enabled,
			anonymous_pull = excluded.anonymous_pull, sku = excluded.sku, tags = excluded.tags, public_network_access = excluded.public_network_access,
			data_endpoint_enabled = excluded.data_endpoint_enabled, role_assignment_mode = excluded.role_assignment_mode,
			cache_quota = excluded.cache_quota, storage_quota = excluded.storage_quota`,
		strings.ToLower(r.Name), string(hosts), now(), b2i(set.AdminEnabled), b2i(set.AnonymousPull), set.SKU, string(tags),
		set.PublicNetworkAccess, b2i(set.DataEndpointEnabled), set.RoleAssignmentMode, set.CacheQuota, set.StorageQuota)
	if err != nil {
		return fmt.Errorf("create registry: %w", err)
	}
	return nil
}

// SetRegistryHosts changes the hosts of a managed registry.
func (s *db) SetRegistryHosts(ctx context.Context, name string, hosts []string) error {
	b, _ := json.Marshal(append([]string{}, hosts...))
	if _, err := s.w.ExecContext(ctx, `UPDATE registries SET hosts = $1 WHERE name = $2`, string(b), strings.ToLower(name)); err != nil {
		return fmt.Errorf("registry hosts: %w", err)
	}
	return nil
}

// ManagedRegistries returns the registries created through the API.
func (s *db) ManagedRegistries(ctx context.Context) ([]RegistryRecord, error) {
	return queryRows(ctx, s.r, "managed registries", func(sc scanner) (RegistryRecord, error) {
		var r RegistryRecord
		var hosts string
		if err := sc.Scan(&r.Name, &hosts); err != nil {
			return r, fmt.Errorf("managed registries: %w", err)
		}
		return r, jsonColumn(hosts, &r.Hosts, "managed registry "+r.Name)
	}, `SELECT name, hosts FROM registries WHERE managed = 1 ORDER BY name`)
}

// registryTables hold rows of one registry; DeleteRegistry clears them.
var registryTables = []string{"repositories", "repo_blobs", "manifests", "manifest_refs", "tags", "uploads", "cache_rules",
	"credential_sets", "rules_generation", "operations", "sync_leases", "sync_runs", "sync_tags", "scope_maps", "tokens", "refresh_tokens", "retention_policies"}

// DeleteRegistry deletes a managed registry and everything recorded for
// it (blobs stay in the blob store: other registries may share them).
func (s *db) DeleteRegistry(ctx context.Context, name string) error {
	name = strings.ToLower(name)
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, t := range registryTables {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t+` WHERE registry = $1`, name); err != nil {
				return fmt.Errorf("delete registry %s (%s): %w", name, t, err)
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM registries WHERE name = $1 AND managed = 1`, name); err != nil {
			return fmt.Errorf("delete registry %s: %w", name, err)
		}
		return nil
	})
}

// ErrQuota is returned when an identity is at its limit.
var ErrQuota = errors.New("quota exceeded")

// CreateOwnedUpload records an upload session started by owner, unless
// owner already has max sessions started within maxAge (ErrQuota).
func (s *db) CreateOwnedUpload(ctx context.Context, registry, repo, id, owner string, max int, maxAge time.Duration) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		// The count and the insert see the same sessions (replicas too).
		if err := s.d.lock(ctx, tx, "uploads:"+owner); err != nil {
			return err
		}
		var n int
		t := now()
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM uploads WHERE owner = $1 AND created_at > $2`,
			owner, t-maxAge.Microseconds()).Scan(&n); err != nil {
			return fmt.Errorf("create upload: %w", err)
		}
		if n >= max {
			return fmt.Errorf("%s has %d open upload sessions: %w", owner, n, ErrQuota)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO uploads(id, registry, repo, created_at, owner) VALUES ($1, $2, $3, $4, $5)`,
			id, registry, repo, t, owner); err != nil {
			return fmt.Errorf("create upload: %w", err)
		}
		return nil
	})
}

// UploadStarted returns when upload session id of repo was started
// (ok false if there is none).
func (s *db) UploadStarted(ctx context.Context, registry, repo, id string) (time.Time, bool, error) {
	var c int64
	err := s.r.QueryRowContext(ctx, `SELECT created_at FROM uploads WHERE id = $1 AND registry = $2 AND repo = $3`, id, registry, repo).Scan(&c)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("upload: %w", err)
	}
	return fromMicros(c), true, nil
}

// ScopeMap is a user-defined scope map: ACR action strings such as
// repositories/team/*/content/read.
type ScopeMap struct {
	Name        string
	Description string
	Actions     []string
	Created     time.Time
	Modified    time.Time
}

// GetScopeMap returns a scope map (ErrNotFound if none).
func (s *db) GetScopeMap(ctx context.Context, registry, name string) (ScopeMap, error) {
	var m ScopeMap
	var acts string
	var c, mod int64
	err := s.r.QueryRowContext(ctx, `SELECT name, description, actions, created_at, modified_at FROM scope_maps WHERE registry = $1 AND name_key = $2`,
		strings.ToLower(registry), nameKey(name)).Scan(&m.Name, &m.Description, &acts, &c, &mod)
	if err := rowError(err, "get scope map"); err != nil {
		return m, err
	}
	if err := jsonColumn(acts, &m.Actions, "get scope map "+name); err != nil {
		return m, err
	}
	m.Created, m.Modified = fromMicros(c), fromMicros(mod)
	return m, nil
}

// ListScopeMaps returns registry's scope maps by name.
func (s *db) ListScopeMaps(ctx context.Context, registry string) ([]ScopeMap, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM scope_maps WHERE registry = $1 ORDER BY name_key`, strings.ToLower(registry))
	if err != nil {
		return nil, fmt.Errorf("list scope maps: %w", err)
	}
	names, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("list scope maps: %w", err)
	}
	out := make([]ScopeMap, 0, len(names))
	for _, n := range names {
		m, err := s.GetScopeMap(ctx, registry, n)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if err == nil {
			out = append(out, m)
		}
	}
	return out, nil
}

// PutScopeMap creates or replaces a scope map, keeping its creation time.
// It reports whether it was created.
func (s *db) PutScopeMap(ctx context.Context, registry string, m ScopeMap) (bool, error) {
	acts, _ := json.Marshal(append([]string{}, m.Actions...))
	t := now()
	var created bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.d.lock(ctx, tx, "access:"+strings.ToLower(registry)); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `UPDATE scope_maps SET description = $1, actions = $2, modified_at = $3 WHERE registry = $4 AND name_key = $5`,
			m.Description, string(acts), t, strings.ToLower(registry), nameKey(m.Name))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		created = true
		_, err = tx.ExecContext(ctx, `INSERT INTO scope_maps(registry, name_key, name, description, actions, created_at, modified_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			strings.ToLower(registry), nameKey(m.Name), m.Name, m.Description, string(acts), t, t)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("put scope map: %w", err)
	}
	return created, nil
}

// b2i stores a flag as the INTEGER 0 or 1 both engines compare.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// DeleteScopeMap deletes a scope map; ErrConflict if a token uses it.
func (s *db) DeleteScopeMap(ctx context.Context, registry, name string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		// Tokens are written under the same lock: none starts using the
		// scope map between the count and the delete.
		if err := s.d.lock(ctx, tx, "access:"+strings.ToLower(registry)); err != nil {
			return err
		}
		var n int
		// Tokens name their scope map as written; names ignore ASCII case.
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM tokens WHERE registry = $1 AND lower(scope_map) = $2`,
			strings.ToLower(registry), nameKey(name)).Scan(&n); err != nil {
			return fmt.Errorf("delete scope map: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("scope map %s is used by %d token(s): %w", name, n, ErrConflict)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM scope_maps WHERE registry = $1 AND name_key = $2`, strings.ToLower(registry), nameKey(name))
		if err != nil {
			return fmt.Errorf("delete scope map: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// TokenPassword is one of a token's two passwords.
type TokenPassword struct {
	Name    string    `json:"name"` // password1 or password2
	Hash    string    `json:"hash"` // argon2id
	Created time.Time `json:"created"`
	Expiry  time.Time `json:"expiry,omitzero"` // zero: never
}

// Token is a repository-scoped access token.
type Token struct {
	Name      string
	ScopeMap  string // scope map name ("" = none: no access)
	Status    string // enabled or disabled
	Passwords []TokenPassword
	Created   time.Time
	Modified  time.Time
}

// GetToken returns a token (ErrNotFound if none).
func (s *db) GetToken(ctx context.Context, registry, name string) (Token, error) {
	return getToken(ctx, s.r, registry, name)
}

type queryRower interface {
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func getToken(ctx context.Context, q queryRower, registry, name string) (Token, error) {
	var tk Token
	var pw string
	var c, mod int64
	err := q.QueryRowContext(ctx, `SELECT name, scope_map, status, passwords, created_at, modified_at FROM tokens WHERE registry = $1 AND name_key = $2`,
		strings.ToLower(registry), nameKey(name)).Scan(&tk.Name, &tk.ScopeMap, &tk.Status, &pw, &c, &mod)
	if err := rowError(err, "get token"); err != nil {
		return tk, err
	}
	if err := jsonColumn(pw, &tk.Passwords, "get token "+name); err != nil {
		return tk, err
	}
	tk.Created, tk.Modified = fromMicros(c), fromMicros(mod)
	return tk, nil
}

// ListTokens returns registry's tokens by name.
func (s *db) ListTokens(ctx context.Context, registry string) ([]Token, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM tokens WHERE registry = $1 ORDER BY name_key`, strings.ToLower(registry))
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	names, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	out := make([]Token, 0, len(names))
	for _, n := range names {
		tk, err := s.GetToken(ctx, registry, n)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if err == nil {
			out = append(out, tk)
		}
	}
	return out, nil
}

// UpdateToken creates or changes a token in one transaction: fn gets the
// current token (created false) or a zero Token with Name set (created
// true). It reports whether the token was created.
func (s *db) UpdateToken(ctx context.Context, registry, name string, fn func(tk *Token, created bool) error) (bool, error) {
	var created bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.d.lock(ctx, tx, "access:"+strings.ToLower(registry)); err != nil {
			return err
		}
		tk, err := getToken(ctx, tx, registry, name)
		created = errors.Is(err, ErrNotFound)
		if err != nil && !created {
			return err
		}
		if created {
			tk = Token{Name: name}
		}
		if err := fn(&tk, created); err != nil {
			return err
		}
		pw, _ := json.Marshal(append([]TokenPassword{}, tk.Passwords...))
		t := now()
		if created {
			_, err = tx.ExecContext(ctx, `INSERT INTO tokens(registry, name_key, name, scope_map, status, passwords, created_at, modified_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
				strings.ToLower(registry), nameKey(tk.Name), tk.Name, tk.ScopeMap, tk.Status, string(pw), t, t)
		} else {
			_, err = tx.ExecContext(ctx, `UPDATE tokens SET scope_map = $1, status = $2, passwords = $3, modified_at = $4 WHERE registry = $5 AND name_key = $6`,
				tk.ScopeMap, tk.Status, string(pw), t, strings.ToLower(registry), nameKey(name))
		}
		if err != nil {
			return fmt.Errorf("update token: %w", err)
		}
		return nil
	})
	return created, err
}

// DeleteToken deletes a token.
func (s *db) DeleteToken(ctx context.Context, registry, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM tokens WHERE registry = $1 AND name_key = $2`, strings.ToLower(registry), nameKey(name))
	if err != nil {
		return fmt.Errorf("delete token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// SigningKey is a JWT signing key (HMAC secret) shared by all replicas.
type SigningKey struct {
	ID      string
	Secret  []byte
	Created time.Time
}

// SigningKeys returns the signing keys, newest first.
func (s *db) SigningKeys(ctx context.Context) ([]SigningKey, error) {
	return queryRows(ctx, s.r, "signing keys", func(sc scanner) (SigningKey, error) {
		var k SigningKey
		var c int64
		if err := sc.Scan(&k.ID, &k.Secret, &c); err != nil {
			return k, fmt.Errorf("signing keys: %w", err)
		}
		k.Created = fromMicros(c)
		return k, nil
	}, `SELECT kid, secret, created_at FROM signing_keys ORDER BY created_at DESC, kid`)
}

// AddSigningKey stores k unless a key newer than notAfter exists (another
// replica rotated first), and deletes keys created before pruneBefore.
func (s *db) AddSigningKey(ctx context.Context, k SigningKey, notAfter, pruneBefore time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		// Replicas rotating at once: the second sees the first's key.
		if err := s.d.lock(ctx, tx, "signing_keys"); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM signing_keys WHERE created_at > $1`, micros(notAfter)).Scan(&n); err != nil {
			return fmt.Errorf("add signing key: %w", err)
		}
		if n > 0 {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO signing_keys(kid, secret, created_at) VALUES ($1, $2, $3)`, k.ID, k.Secret, micros(k.Created)); err != nil {
			return fmt.Errorf("add signing key: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM signing_keys WHERE created_at < $1`, micros(pruneBefore)); err != nil {
			return fmt.Errorf("prune signing keys: %w", err)
		}
		return nil
	})
}

// RefreshToken is an issued refresh token, known by its hash.
type RefreshToken struct {
	Hash     string
	Registry string
	Kind     string // identity kind: admin or token
	Subject  string
	// Stamp identifies the credential it was issued for; a changed
	// password or disabled identity makes it invalid.
	Stamp   string
	Created time.Time
	Expires time.Time
	Revoked bool
}

// PutRefreshToken records an issued refresh token and drops expired ones.
func (s *db) PutRefreshToken(ctx context.Context, t RefreshToken) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM refresh_tokens WHERE expires_at < $1`, now()); err != nil {
			return fmt.Errorf("refresh tokens: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO refresh_tokens(hash, registry, kind, subject, stamp, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			t.Hash, strings.ToLower(t.Registry), t.Kind, t.Subject, t.Stamp, micros(t.Created), micros(t.Expires))
		if err != nil {
			return fmt.Errorf("put refresh token: %w", err)
		}
		return nil
	})
}

// GetRefreshToken returns the refresh token with this hash.
func (s *db) GetRefreshToken(ctx context.Context, hash string) (RefreshToken, error) {
	t := RefreshToken{Hash: hash}
	var c, e int64
	err := s.r.QueryRowContext(ctx, `SELECT registry, kind, subject, stamp, created_at, expires_at, revoked FROM refresh_tokens WHERE hash = $1`, hash).
		Scan(&t.Registry, &t.Kind, &t.Subject, &t.Stamp, &c, &e, &t.Revoked)
	if err := rowError(err, "get refresh token"); err != nil {
		return t, err
	}
	t.Created, t.Expires = fromMicros(c), fromMicros(e)
	return t, nil
}

// RevokeRefreshTokens revokes every refresh token of an identity.
func (s *db) RevokeRefreshTokens(ctx context.Context, registry, kind, subject string) error {
	_, err := s.w.ExecContext(ctx, `UPDATE refresh_tokens SET revoked = 1 WHERE registry = $1 AND kind = $2 AND lower(subject) = $3`,
		strings.ToLower(registry), kind, nameKey(subject))
	if err != nil {
		return fmt.Errorf("revoke refresh tokens: %w", err)
	}
	return nil
}

// Principal is a management identity: a role, optionally limited to one
// registry, and the salted SHA-256 of its secret (secrets are generated,
// or checked for 128 bits of entropy, so a fast hash suffices).
type Principal struct {
	Name     string
	Role     string
	Registry string // "" = every registry
	Salt     []byte
	Hash     []byte
	Created  time.Time
}

// GetPrincipal returns a principal (ErrNotFound if none).
func (s *db) GetPrincipal(ctx context.Context, name string) (Principal, error) {
	var p Principal
	var c int64
	err := s.r.QueryRowContext(ctx, `SELECT name, role, registry, salt, hash, created_at FROM principals WHERE name_key = $1`, nameKey(name)).
		Scan(&p.Name, &p.Role, &p.Registry, &p.Salt, &p.Hash, &c)
	if err := rowError(err, "get principal"); err != nil {
		return p, err
	}
	p.Created = fromMicros(c)
	return p, nil
}

// ListPrincipals returns every principal by name.
func (s *db) ListPrincipals(ctx context.Context) ([]Principal, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT name FROM principals ORDER BY name_key`)
	if err != nil {
		return nil, fmt.Errorf("list principals: %w", err)
	}
	names, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("list principals: %w", err)
	}
	out := make([]Principal, 0, len(names))
	for _, n := range names {
		p, err := s.GetPrincipal(ctx, n)
		if err == nil {
			out = append(out, p)
		} else if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
	}
	return out, nil
}

// PutPrincipal creates or replaces a principal.
func (s *db) PutPrincipal(ctx context.Context, p Principal) error {
	_, err := s.w.ExecContext(ctx, `INSERT INTO principals(name_key, name, role, registry, salt, hash, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT(name_key) DO UPDATE SET name = excluded.name, role = excluded.role, registry = excluded.registry, salt = excluded.salt, hash = excluded.hash`,
		nameKey(p.Name), p.Name, p.Role, strings.ToLower(p.Registry), p.Salt, p.Hash, now())
	if err != nil {
		return fmt.Errorf("put principal: %w", err)
	}
	return nil
}

// DeletePrincipal deletes a principal.
func (s *db) DeletePrincipal(ctx context.Context, name string) error {
	res, err := s.w.ExecContext(ctx, `DELETE FROM principals WHERE name_key = $1`, nameKey(name))
	if err != nil {
		return fmt.Errorf("delete principal: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// AuditEntry is one line of the audit log: management changes and
// authentication failures, never secret values.
type AuditEntry struct {
	At       armtime.Time `json:"time"`
	Who      string       `json:"who"`
	Action   string       `json:"action"`
	Resource string       `json:"resource"`
	Result   string       `json:"result"`
	Remote   string       `json:"remote,omitempty"`
}

// AuditRetention is how long audit entries are kept.
const AuditRetention = 90 * 24 * time.Hour

// AddAudit records an entry and drops entries past AuditRetention.
func (s *db) AddAudit(ctx context.Context, e AuditEntry) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO audit_log(at, who, action, resource, result, remote) VALUES ($1, $2, $3, $4, $5, $6)`,
			micros(e.At.Time), e.Who, e.Action, e.Resource, e.Result, e.Remote); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM audit_log WHERE at < $1`, micros(e.At.Add(-AuditRetention))); err != nil {
			return fmt.Errorf("audit retention: %w", err)
		}
		return nil
	})
}

// ListAudit returns up to n entries at or after since, newest first.
func (s *db) ListAudit(ctx context.Context, since time.Time, n int) ([]AuditEntry, error) {
	return queryRows(ctx, s.r, "list audit", func(sc scanner) (AuditEntry, error) {
		var e AuditEntry
		var at int64
		if err := sc.Scan(&at, &e.Who, &e.Action, &e.Resource, &e.Result, &e.Remote); err != nil {
			return e, fmt.Errorf("list audit: %w", err)
		}
		e.At = armtime.Of(fromMicros(at))
		return e, nil
	}, `SELECT at, who, action, resource, result, remote FROM audit_log WHERE at >= $1 ORDER BY id DESC LIMIT $2`, micros(since), n)
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
