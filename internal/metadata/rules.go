package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/rules"
)

// schemaRules holds the management plane's resources. Registry names are
// stored lower-case; rule and credential-set names keep their case but are
// unique ignoring it, as ARM names are. Secret values are never stored:
// credential sets hold references only. (Migration 6, sqliteNormalise,
// replaced the NOCASE collations with name keys.)
var schemaRules = []string{
	`CREATE TABLE registries (
	name       TEXT PRIMARY KEY,
	hosts      TEXT NOT NULL DEFAULT '[]',
	created_at INTEGER NOT NULL
)`,
	`CREATE TABLE cache_rules (
	registry           TEXT NOT NULL,
	name               TEXT NOT NULL COLLATE NOCASE,
	source             TEXT NOT NULL,
	target             TEXT NOT NULL,
	credential_set     TEXT NOT NULL DEFAULT '',
	identity           TEXT NOT NULL DEFAULT '',
	sync_mode          TEXT NOT NULL DEFAULT '',
	sync_referrers     TEXT NOT NULL DEFAULT '',
	filters            TEXT NOT NULL DEFAULT '',
	sync_status        TEXT NOT NULL DEFAULT '',
	provisioning_state TEXT NOT NULL,
	created_at         INTEGER NOT NULL,
	modified_at        INTEGER NOT NULL,
	PRIMARY KEY (registry, name),
	UNIQUE (registry, target)
)`,
	`CREATE INDEX cache_rules_credential_set ON cache_rules(registry, credential_set COLLATE NOCASE)`,
	`CREATE TABLE credential_sets (
	registry           TEXT NOT NULL,
	name               TEXT NOT NULL COLLATE NOCASE,
	login_server       TEXT NOT NULL,
	username_ref       TEXT NOT NULL,
	password_ref       TEXT NOT NULL,
	health_status      TEXT NOT NULL DEFAULT '',
	health_code        TEXT NOT NULL DEFAULT '',
	health_message     TEXT NOT NULL DEFAULT '',
	principal_id       TEXT NOT NULL,
	provisioning_state TEXT NOT NULL,
	created_at         INTEGER NOT NULL,
	modified_at        INTEGER NOT NULL,
	PRIMARY KEY (registry, name)
)`,
	`CREATE TABLE rules_generation (
	registry   TEXT PRIMARY KEY,
	generation INTEGER NOT NULL
)`,
	`CREATE TABLE operations (
	id         TEXT PRIMARY KEY,
	registry   TEXT NOT NULL,
	resource   TEXT NOT NULL,
	status     TEXT NOT NULL,
	error_code TEXT NOT NULL DEFAULT '',
	error_msg  TEXT NOT NULL DEFAULT '',
	started_at INTEGER NOT NULL,
	ended_at   INTEGER NOT NULL DEFAULT 0
)`,
	`CREATE INDEX operations_started ON operations(started_at)`,
}

// OperationRetention is how long finished operation-status documents are kept.
const OperationRetention = 24 * time.Hour

// RegistryRecord is a registry and the host names the data plane serves it on.
type RegistryRecord struct {
	Name  string
	Hosts []string
}

// SyncRegistries records regs (the configured registries), replacing the
// host names of those already known (a registry the API created becomes
// configured: startup flags win). Registries no longer configured keep
// their rows (and rules) so that configuring them again restores them.
func (s *db) SyncRegistries(ctx context.Context, regs []RegistryRecord) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		for _, r := range regs {
			hosts, _ := json.Marshal(append([]string{}, r.Hosts...))
			_, err := tx.ExecContext(ctx, `INSERT INTO registries(name, hosts, created_at) VALUES ($1, $2, $3)
				ON CONFLICT(name) DO UPDATE SET hosts = excluded.hosts, managed = 0`, strings.ToLower(r.Name), string(hosts), now())
			if err != nil {
				return fmt.Errorf("sync registries: %w", err)
			}
		}
		return nil
	})
}

// RulesGeneration returns a counter that moves whenever a cache rule or
// credential set of registry changes (0 before the first change).
func (s *db) RulesGeneration(ctx context.Context, registry string) (int64, error) {
	var g int64
	err := s.queryRow(ctx, `SELECT generation FROM rules_generation WHERE registry = $1`, strings.ToLower(registry)).Scan(&g)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("rules generation: %w", err)
	}
	return g, nil
}

const ruleColumns = `name, source, target, credential_set, identity, sync_mode, sync_referrers, filters, sync_status, provisioning_state, created_at, modified_at, retention_days`

// ListCacheRules returns all cache rules of registry, by name.
func (s *db) ListCacheRules(ctx context.Context, registry string) ([]rules.Rule, error) {
	out, _, err := s.ListCacheRulesPage(ctx, registry, "", 0)
	return out, err
}

// ListCacheRulesPage returns up to n rules (n <= 0: all) named after
// `after` (case-insensitive order), and whether more follow.
func (s *db) ListCacheRulesPage(ctx context.Context, registry, after string, n int) ([]rules.Rule, bool, error) {
	return listCacheRules(ctx, s.r, registry, after, n)
}

type querier interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

func listCacheRules(ctx context.Context, q querier, registry, after string, n int) ([]rules.Rule, bool, error) {
	query, args := limit(`SELECT `+ruleColumns+` FROM cache_rules WHERE registry = $1 AND name_key > $2 ORDER BY name_key`, 3, n,
		[]any{strings.ToLower(registry), nameKey(after)})
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list cache rules: %w", err)
	}
	defer rows.Close()
	out := []rules.Rule{}
	for rows.Next() {
		r, err := scanRule(rows)
		if err != nil {
			return nil, false, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list cache rules: %w", err)
	}
	if n > 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// GetCacheRule returns cache rule name of registry, or ErrNotFound.
func (s *db) GetCacheRule(ctx context.Context, registry, name string) (rules.Rule, error) {
	r, ok, err := getCacheRule(ctx, s.r, registry, name)
	if err == nil && !ok {
		err = ErrNotFound
	}
	return r, err
}

func getCacheRule(ctx context.Context, q querier, registry, name string) (rules.Rule, bool, error) {
	r, err := scanRule(q.QueryRowContext(ctx, `SELECT `+ruleColumns+` FROM cache_rules WHERE registry = $1 AND name_key = $2`, strings.ToLower(registry), nameKey(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return rules.Rule{}, false, nil
	}
	return r, err == nil, err
}

// storedFilters is the stored form of rules.Filters (its own type so that
// renaming Go fields never breaks stored rows).
type storedFilters struct {
	Tags          string            `json:"tags,omitempty"`
	Platforms     []string          `json:"platforms,omitempty"`
	ImageTypes    *storedKindFilter `json:"imageTypes,omitempty"`
	ArtifactTypes *storedKindFilter `json:"artifactTypes,omitempty"`
}

type storedKindFilter struct {
	Type   string   `json:"type"`
	Values []string `json:"values"`
}

func toStoredKind(k *rules.KindFilter) *storedKindFilter {
	if k == nil {
		return nil
	}
	return &storedKindFilter{Type: k.Type, Values: k.Values}
}

func fromStoredKind(k *storedKindFilter) *rules.KindFilter {
	if k == nil {
		return nil
	}
	return &rules.KindFilter{Type: k.Type, Values: k.Values}
}

type scanner interface{ Scan(dest ...any) error }

func scanRule(sc scanner) (rules.Rule, error) {
	var r rules.Rule
	var mode, filters, status string
	var created, modified int64
	err := sc.Scan(&r.Name, &r.Source, &r.Target, &r.CredentialSet, &r.Identity, &mode, &r.SyncReferrers,
		&filters, &status, &r.ProvisioningState, &created, &modified, &r.RetentionDays)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return r, err
		}
		return r, fmt.Errorf("read cache rule: %w", err)
	}
	r.SyncMode = rules.SyncMode(mode)
	r.CreatedAt, r.ModifiedAt = fromMicros(created), fromMicros(modified)
	if filters != "" {
		var f storedFilters
		if err := json.Unmarshal([]byte(filters), &f); err != nil {
			return r, fmt.Errorf("read cache rule %s filters: %w", r.Name, err)
		}
		r.Filters = rules.Filters{Tags: f.Tags, Platforms: f.Platforms,
			ImageTypes: fromStoredKind(f.ImageTypes), ArtifactTypes: fromStoredKind(f.ArtifactTypes)}
	}
	if status != "" {
		r.SyncStatus = &rules.SyncStatus{}
		if err := json.Unmarshal([]byte(status), r.SyncStatus); err != nil {
			return r, fmt.Errorf("read cache rule %s sync status: %w", r.Name, err)
		}
	}
	return r, nil
}

// SetCacheRuleSyncStatus records active-sync progress for a rule. It does
// not move the rules generation: matching does not depend on it.
func (s *db) SetCacheRuleSyncStatus(ctx context.Context, registry, name string, st rules.SyncStatus) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("sync status: %w", err)
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE cache_rules SET sync_status = $1 WHERE registry = $2 AND name_key = $3`, string(b), strings.ToLower(registry), nameKey(name))
		if err != nil {
			return fmt.Errorf("sync status: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

const credSetColumns = `name, login_server, username_ref, password_ref, health_status, health_code, health_message, principal_id, provisioning_state, created_at, modified_at, identity`

func scanCredSet(sc scanner) (rules.CredentialSet, error) {
	var c rules.CredentialSet
	var created, modified int64
	err := sc.Scan(&c.Name, &c.LoginServer, &c.UsernameRef, &c.PasswordRef, &c.Health.Status, &c.Health.ErrorCode,
		&c.Health.ErrorMessage, &c.PrincipalID, &c.ProvisioningState, &created, &modified, &c.Identity)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return c, err
		}
		return c, fmt.Errorf("read credential set: %w", err)
	}
	c.CreatedAt, c.ModifiedAt = fromMicros(created), fromMicros(modified)
	return c, nil
}

// GetCredentialSet returns credential set name of registry, or ErrNotFound.
func (s *db) GetCredentialSet(ctx context.Context, registry, name string) (rules.CredentialSet, error) {
	c, ok, err := getCredSet(ctx, s.r, registry, name)
	if err == nil && !ok {
		err = ErrNotFound
	}
	return c, err
}

func getCredSet(ctx context.Context, q querier, registry, name string) (rules.CredentialSet, bool, error) {
	c, err := scanCredSet(q.QueryRowContext(ctx, `SELECT `+credSetColumns+` FROM credential_sets WHERE registry = $1 AND name_key = $2`, strings.ToLower(registry), nameKey(name)))
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	return c, err == nil, err
}

// ListCredentialSetsPage returns up to n credential sets (n <= 0: all)
// named after `after`, and whether more follow.
func (s *db) ListCredentialSetsPage(ctx context.Context, registry, after string, n int) ([]rules.CredentialSet, bool, error) {
	query, args := limit(`SELECT `+credSetColumns+` FROM credential_sets WHERE registry = $1 AND name_key > $2 ORDER BY name_key`, 3, n,
		[]any{strings.ToLower(registry), nameKey(after)})
	rows, err := s.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, false, fmt.Errorf("list credential sets: %w", err)
	}
	defer rows.Close()
	out := []rules.CredentialSet{}
	for rows.Next() {
		c, err := scanCredSet(rows)
		if err != nil {
			return nil, false, err
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list credential sets: %w", err)
	}
	if n > 0 && len(out) > n {
		return out[:n], true, nil
	}
	return out, false, nil
}

// setIdentityAndConditions (SQLite migration 14, PostgreSQL 8) stores the
// user-assigned identity a credential set reads its Key Vault secrets as
// ("" = the system-assigned one), role assignments' ABAC conditions and
// identities' client secrets (a slow hash). The statements are the same
// in both.
var setIdentityAndConditions = []string{
	`ALTER TABLE credential_sets ADD COLUMN identity TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE role_assignments ADD COLUMN condition TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE role_assignments ADD COLUMN condition_version TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE identities ADD COLUMN secret_hash TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE identities ADD COLUMN secret_created BIGINT NOT NULL DEFAULT 0`,
}
