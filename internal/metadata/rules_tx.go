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

// rulesTx implements RulesTx on a database transaction.
type rulesTx struct {
	s        *db
	ctx      context.Context
	tx       *sql.Tx
	registry string
	changed  bool
}

// UpdateRules runs fn in a write transaction on registry's rules.
func (s *db) UpdateRules(ctx context.Context, registry string, fn func(RulesTx) error) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		rt := &rulesTx{s: s, ctx: ctx, tx: tx, registry: strings.ToLower(registry)}
		if err := s.d.lock(ctx, tx, "rules:"+rt.registry); err != nil {
			return err
		}
		if err := fn(rt); err != nil {
			return err
		}
		if !rt.changed {
			return nil
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO rules_generation(registry, generation) VALUES ($1, 1)
			ON CONFLICT(registry) DO UPDATE SET generation = rules_generation.generation + 1`, rt.registry)
		if err != nil {
			return fmt.Errorf("rules generation: %w", err)
		}
		return nil
	})
}

// CacheRules returns the registry's rules.
func (t *rulesTx) CacheRules() ([]rules.Rule, error) {
	out, _, err := listCacheRules(t.ctx, t.tx, t.registry, "", 0)
	return out, err
}

// CacheRule returns rule name, if it exists.
func (t *rulesTx) CacheRule(name string) (rules.Rule, bool, error) {
	return getCacheRule(t.ctx, t.tx, t.registry, name)
}

// PutCacheRule creates or replaces rule r (by name, ignoring case).
func (t *rulesTx) PutCacheRule(r rules.Rule) error {
	var filters string
	if !r.Filters.IsZero() {
		b, err := json.Marshal(storedFilters{Tags: r.Filters.Tags, Platforms: r.Filters.Platforms,
			ImageTypes: toStoredKind(r.Filters.ImageTypes), ArtifactTypes: toStoredKind(r.Filters.ArtifactTypes)})
		if err != nil {
			return fmt.Errorf("put cache rule: %w", err)
		}
		filters = string(b)
	}
	var status string
	if r.SyncStatus != nil {
		b, _ := json.Marshal(r.SyncStatus)
		status = string(b)
	}
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO cache_rules(registry, name_key, `+ruleColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		ON CONFLICT(registry, name_key) DO UPDATE SET name = excluded.name, source = excluded.source, target = excluded.target,
			credential_set = excluded.credential_set, identity = excluded.identity, sync_mode = excluded.sync_mode,
			sync_referrers = excluded.sync_referrers, filters = excluded.filters, sync_status = excluded.sync_status,
			provisioning_state = excluded.provisioning_state, modified_at = excluded.modified_at, retention_days = excluded.retention_days`,
		t.registry, nameKey(r.Name), r.Name, r.Source, r.Target, r.CredentialSet, r.Identity, string(r.SyncMode), r.SyncReferrers,
		filters, status, r.ProvisioningState, micros(r.CreatedAt), micros(r.ModifiedAt), r.RetentionDays)
	if err != nil {
		return t.s.conflict(err, fmt.Sprintf("put cache rule %s: target %s", r.Name, r.Target))
	}
	t.changed = true
	return nil
}

// DeleteCacheRule removes rule name; false if there was none.
func (t *rulesTx) DeleteCacheRule(name string) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM cache_rules WHERE registry = $1 AND name_key = $2`, t.registry, nameKey(name))
	if err != nil {
		return false, fmt.Errorf("delete cache rule: %w", err)
	}
	n, _ := res.RowsAffected()
	t.changed = t.changed || n > 0
	return n > 0, nil
}

// CredentialSet returns credential set name, if it exists.
func (t *rulesTx) CredentialSet(name string) (rules.CredentialSet, bool, error) {
	return getCredSet(t.ctx, t.tx, t.registry, name)
}

// PutCredentialSet creates or replaces credential set c (by name).
func (t *rulesTx) PutCredentialSet(c rules.CredentialSet) error {
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO credential_sets(registry, name_key, `+credSetColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
		ON CONFLICT(registry, name_key) DO UPDATE SET name = excluded.name, login_server = excluded.login_server, username_ref = excluded.username_ref,
			password_ref = excluded.password_ref, health_status = excluded.health_status, health_code = excluded.health_code,
			health_message = excluded.health_message, provisioning_state = excluded.provisioning_state, modified_at = excluded.modified_at,
			identity = excluded.identity`,
		t.registry, nameKey(c.Name), c.Name, c.LoginServer, c.UsernameRef, c.PasswordRef, c.Health.Status, c.Health.ErrorCode,
		c.Health.ErrorMessage, c.PrincipalID, c.ProvisioningState, micros(c.CreatedAt), micros(c.ModifiedAt), c.Identity)
	if err != nil {
		return t.s.conflict(err, "put credential set "+c.Name)
	}
	t.changed = true
	return nil
}

// DeleteCredentialSet removes credential set name; false if there was none.
func (t *rulesTx) DeleteCredentialSet(name string) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM credential_sets WHERE registry = $1 AND name_key = $2`, t.registry, nameKey(name))
	if err != nil {
		return false, fmt.Errorf("delete credential set: %w", err)
	}
	n, _ := res.RowsAffected()
	t.changed = t.changed || n > 0
	return n > 0, nil
}

// RepositoryExists reports whether repository repo of the registry holds content.
func (t *rulesTx) RepositoryExists(repo string) (bool, error) {
	var one int
	err := t.tx.QueryRowContext(t.ctx, `SELECT 1 FROM repositories WHERE registry = $1 AND name = $2 AND pushed = 1`, t.registry, repo).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("repository exists: %w", err)
	}
	return true, nil
}

// RepositoryUnder returns the first repository whose name starts with
// prefix ("" = any), if there is one.
func (t *rulesTx) RepositoryUnder(prefix string) (string, bool, error) {
	q := `SELECT name FROM repositories WHERE registry = $1 AND pushed = 1 ORDER BY name LIMIT 1`
	args := []any{t.registry}
	if prefix != "" {
		// A range instead of LIKE: repository names contain "_", a LIKE wildcard.
		q = `SELECT name FROM repositories WHERE registry = $1 AND pushed = 1 AND name >= $2 AND name < $3 ORDER BY name LIMIT 1`
		args = append(args, prefix, prefix+"\U0010FFFF")
	}
	var name string
	err := t.tx.QueryRowContext(t.ctx, q, args...).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("repositories under %q: %w", prefix, err)
	}
	return name, true, nil
}

// schemaOperationProgress lets an operation run after its request ended
// (garbage collection): the running replica's heartbeat, and the
// operation's progress and result, so that any replica answers the poll.
var schemaOperationProgress = []string{
	`ALTER TABLE operations ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0`,
	`ALTER TABLE operations ADD COLUMN properties TEXT NOT NULL DEFAULT ''`,
}

// Operation is an asynchronous operation's status document, kept in the
// database so any replica can answer a poll.
type Operation struct {
	ID        string
	Registry  string
	Resource  string // ARM ID of the resource operated on
	Status    string // InProgress, Succeeded, Failed, Canceled
	ErrorCode string
	ErrorMsg  string
	StartedAt time.Time
	EndedAt   time.Time
	// UpdatedAt is when the replica running an InProgress operation last
	// wrote it (its heartbeat); Properties is the operation's own JSON
	// (its progress, then its result), "" when it has none.
	UpdatedAt  time.Time
	Properties string
}

// PutOperation records op (in the rules transaction, so an operation is
// visible exactly when its change is) and drops expired ones.
func (t *rulesTx) PutOperation(op Operation) error {
	return putOperation(t.ctx, t.tx, op)
}

func putOperation(ctx context.Context, tx *sql.Tx, op Operation) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM operations WHERE started_at < $1`, micros(time.Now().Add(-OperationRetention))); err != nil {
		return fmt.Errorf("expire operations: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO operations(id, registry, resource, status, error_code, error_msg, started_at, ended_at, updated_at, properties)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT(id) DO UPDATE SET status = excluded.status, error_code = excluded.error_code,
			error_msg = excluded.error_msg, ended_at = excluded.ended_at, updated_at = excluded.updated_at, properties = excluded.properties`,
		op.ID, strings.ToLower(op.Registry), op.Resource, op.Status, op.ErrorCode, op.ErrorMsg, micros(op.StartedAt), micros(op.EndedAt),
		micros(op.UpdatedAt), op.Properties)
	if err != nil {
		return fmt.Errorf("put operation: %w", err)
	}
	return nil
}

// PutOperation records op outside a rules change.
func (s *db) PutOperation(ctx context.Context, op Operation) error {
	return s.tx(ctx, func(tx *sql.Tx) error { return putOperation(ctx, tx, op) })
}

const operationColumns = `id, registry, resource, status, error_code, error_msg, started_at, ended_at, updated_at, properties`

// GetOperation returns operation id, or ErrNotFound.
func (s *db) GetOperation(ctx context.Context, id string) (Operation, error) {
	return s.scanOperation(ctx, "get operation", `SELECT `+operationColumns+` FROM operations WHERE id = $1`, id)
}

// LatestOperation returns the operation of kind (the prefix of its ID, as
// "garbagecollect") on registry that started last, or ErrNotFound.
func (s *db) LatestOperation(ctx context.Context, registry, kind string) (Operation, error) {
	return s.scanOperation(ctx, "latest operation", `SELECT `+operationColumns+` FROM operations
		WHERE registry = $1 AND substr(id, 1, $2) = $3 ORDER BY started_at DESC, id DESC LIMIT 1`,
		strings.ToLower(registry), len(kind)+1, kind+"-")
}

func (s *db) scanOperation(ctx context.Context, what, query string, args ...any) (Operation, error) {
	var op Operation
	var started, ended, updated int64
	err := s.r.QueryRowContext(ctx, query, args...).
		Scan(&op.ID, &op.Registry, &op.Resource, &op.Status, &op.ErrorCode, &op.ErrorMsg, &started, &ended, &updated, &op.Properties)
	if errors.Is(err, sql.ErrNoRows) {
		return op, ErrNotFound
	}
	if err != nil {
		return op, fmt.Errorf("%s: %w", what, err)
	}
	op.StartedAt, op.EndedAt, op.UpdatedAt = fromMicros(started), fromMicros(ended), fromMicros(updated)
	return op, nil
}
