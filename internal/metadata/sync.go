package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// schemaSync holds active sync's shared state: one lease per rule (so only
// one replica syncs a rule at a time), the rule's last run, and one row per
// synced tag (what it last resolved to, and its last error). The per-tag
// rows are what lets an interrupted run resume: a tag recorded as done at
// the digest the upstream still serves is not walked again. Rules are
// keyed by their name key (sqliteNormalise replaced the collation).
var schemaSync = []string{
	`CREATE TABLE sync_leases (
	registry   TEXT NOT NULL,
	rule       TEXT NOT NULL COLLATE NOCASE,
	holder     TEXT NOT NULL,
	expires_at INTEGER NOT NULL,
	PRIMARY KEY (registry, rule)
)`,
	`CREATE TABLE sync_runs (
	registry       TEXT NOT NULL,
	rule           TEXT NOT NULL COLLATE NOCASE,
	run_id         TEXT NOT NULL,
	result         TEXT NOT NULL,
	started_at     INTEGER NOT NULL,
	ended_at       INTEGER NOT NULL DEFAULT 0,
	next_at        INTEGER NOT NULL DEFAULT 0,
	tags_synced    INTEGER NOT NULL DEFAULT 0,
	tags_unchanged INTEGER NOT NULL DEFAULT 0,
	tags_excluded  INTEGER NOT NULL DEFAULT 0,
	tags_failed    INTEGER NOT NULL DEFAULT 0,
	bytes_fetched  INTEGER NOT NULL DEFAULT 0,
	error          TEXT NOT NULL DEFAULT '',
	config_hash    TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (registry, rule)
)`,
	`CREATE TABLE sync_tags (
	registry    TEXT NOT NULL,
	rule        TEXT NOT NULL COLLATE NOCASE,
	repo        TEXT NOT NULL,
	tag         TEXT NOT NULL,
	digest      TEXT NOT NULL DEFAULT '',
	state       TEXT NOT NULL,
	error       TEXT NOT NULL DEFAULT '',
	config_hash TEXT NOT NULL DEFAULT '',
	updated_at  INTEGER NOT NULL,
	PRIMARY KEY (registry, rule, repo, tag)
)`,
	`CREATE INDEX sync_tags_errors ON sync_tags(registry, rule) WHERE error <> ''`,
}

// RuleRef names a cache rule.
type RuleRef struct {
	Registry string
	Name     string
}

// SyncRun is a rule's current or last active-sync run.
type SyncRun struct {
	Registry, Rule string
	RunID          string
	Result         string
	StartedAt      time.Time
	EndedAt        time.Time // zero while running
	NextAt         time.Time // set when the run was deferred: not before
	TagsSynced     int
	TagsUnchanged  int
	TagsExcluded   int
	TagsFailed     int
	BytesFetched   int64
	Error          string
	ConfigHash     string // the rule configuration the run synced
}

// SyncTag is the sync state of one tag under a rule.
type SyncTag struct {
	Registry, Rule, Repo, Tag string
	Digest                    string // what the upstream tag resolved to
	State                     string // the syncer's vocabulary: done, excluded, failed
	Error                     string
	ConfigHash                string
	UpdatedAt                 time.Time
}

// ActiveSyncRules lists the rules of every registry whose sync mode is
// ActiveSync.
func (s *db) ActiveSyncRules(ctx context.Context) ([]RuleRef, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT registry, name FROM cache_rules WHERE lower(sync_mode) = 'activesync' ORDER BY registry, name_key`)
	if err != nil {
		return nil, fmt.Errorf("active sync rules: %w", err)
	}
	defer rows.Close()
	var out []RuleRef
	for rows.Next() {
		var r RuleRef
		if err := rows.Scan(&r.Registry, &r.Name); err != nil {
			return nil, fmt.Errorf("active sync rules: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("active sync rules: %w", err)
	}
	return out, nil
}

// AcquireSyncLease takes (or renews, for the same holder) the lease on a
// rule until now+ttl. It reports false when another holder's lease has not
// expired. Expiry compares this replica's clock with the holder's: keep
// replica clocks in sync (NTP), and ttl well above their skew.
func (s *db) AcquireSyncLease(ctx context.Context, registry, rule, holder string, ttl time.Duration) (bool, error) {
	t := time.Now()
	var got bool
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO sync_leases(registry, rule, holder, expires_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT(registry, rule) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
			WHERE sync_leases.expires_at < $5 OR sync_leases.holder = excluded.holder`,
			strings.ToLower(registry), nameKey(rule), holder, t.Add(ttl).UnixMicro(), t.UnixMicro())
		if err != nil {
			return fmt.Errorf("sync lease: %w", err)
		}
		n, err := res.RowsAffected()
		got = n > 0
		return err
	})
	return got, err
}

// ReleaseSyncLease gives the lease up, if holder still holds it.
func (s *db) ReleaseSyncLease(ctx context.Context, registry, rule, holder string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM sync_leases WHERE registry = $1 AND rule = $2 AND holder = $3`, strings.ToLower(registry), nameKey(rule), holder)
		if err != nil {
			return fmt.Errorf("sync lease: %w", err)
		}
		return nil
	})
}

const syncRunColumns = `registry, rule, run_id, result, started_at, ended_at, next_at, tags_synced, tags_unchanged, tags_excluded, tags_failed, bytes_fetched, error, config_hash`

// GetSyncRun returns the rule's current or last run, or ErrNotFound.
func (s *db) GetSyncRun(ctx context.Context, registry, rule string) (SyncRun, error) {
	var r SyncRun
	var started, ended, next int64
	err := s.r.QueryRowContext(ctx, `SELECT `+syncRunColumns+` FROM sync_runs WHERE registry = $1 AND rule = $2`, strings.ToLower(registry), nameKey(rule)).
		Scan(&r.Registry, &r.Rule, &r.RunID, &r.Result, &started, &ended, &next, &r.TagsSynced, &r.TagsUnchanged,
			&r.TagsExcluded, &r.TagsFailed, &r.BytesFetched, &r.Error, &r.ConfigHash)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("get sync run: %w", err)
	}
	r.Rule = rule // the stored key is lower-cased
	r.StartedAt, r.EndedAt, r.NextAt = fromMicros(started), fromMicros(ended), fromMicros(next)
	return r, nil
}

// PutSyncRun records r as the rule's current or last run.
func (s *db) PutSyncRun(ctx context.Context, r SyncRun) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_runs(`+syncRunColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
			ON CONFLICT(registry, rule) DO UPDATE SET run_id = excluded.run_id, result = excluded.result,
				started_at = excluded.started_at, ended_at = excluded.ended_at, next_at = excluded.next_at,
				tags_synced = excluded.tags_synced, tags_unchanged = excluded.tags_unchanged,
				tags_excluded = excluded.tags_excluded, tags_failed = excluded.tags_failed,
				bytes_fetched = excluded.bytes_fetched, error = excluded.error, config_hash = excluded.config_hash`,
			strings.ToLower(r.Registry), nameKey(r.Rule), r.RunID, r.Result, micros(r.StartedAt), micros(r.EndedAt), micros(r.NextAt),
			r.TagsSynced, r.TagsUnchanged, r.TagsExcluded, r.TagsFailed, r.BytesFetched, r.Error, r.ConfigHash)
		if err != nil {
			return fmt.Errorf("put sync run: %w", err)
		}
		return nil
	})
}

// GetSyncTag returns the sync state of a tag, or ErrNotFound.
func (s *db) GetSyncTag(ctx context.Context, registry, rule, repo, tag string) (SyncTag, error) {
	st := SyncTag{Registry: strings.ToLower(registry), Rule: rule, Repo: repo, Tag: tag}
	var updated int64
	err := s.r.QueryRowContext(ctx, `SELECT digest, state, error, config_hash, updated_at FROM sync_tags WHERE registry = $1 AND rule = $2 AND repo = $3 AND tag = $4`,
		st.Registry, nameKey(rule), repo, tag).Scan(&st.Digest, &st.State, &st.Error, &st.ConfigHash, &updated)
	if errors.Is(err, sql.ErrNoRows) {
		return st, ErrNotFound
	}
	if err != nil {
		return st, fmt.Errorf("get sync tag: %w", err)
	}
	st.UpdatedAt = fromMicros(updated)
	return st, nil
}

// PutSyncTag records the sync state of a tag.
func (s *db) PutSyncTag(ctx context.Context, st SyncTag) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sync_tags(registry, rule, repo, tag, digest, state, error, config_hash, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			ON CONFLICT(registry, rule, repo, tag) DO UPDATE SET digest = excluded.digest, state = excluded.state,
				error = excluded.error, config_hash = excluded.config_hash, updated_at = excluded.updated_at`,
			strings.ToLower(st.Registry), nameKey(st.Rule), st.Repo, st.Tag, st.Digest, st.State, st.Error, st.ConfigHash, now())
		if err != nil {
			return fmt.Errorf("put sync tag: %w", err)
		}
		return nil
	})
}

// SyncTagErrors returns up to n tags of a rule whose last sync failed,
// most recent first.
func (s *db) SyncTagErrors(ctx context.Context, registry, rule string, n int) ([]SyncTag, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT repo, tag, digest, state, error, config_hash, updated_at FROM sync_tags
		WHERE registry = $1 AND rule = $2 AND error <> '' ORDER BY updated_at DESC, repo, tag LIMIT $3`, strings.ToLower(registry), nameKey(rule), n)
	if err != nil {
		return nil, fmt.Errorf("sync tag errors: %w", err)
	}
	defer rows.Close()
	var out []SyncTag
	for rows.Next() {
		st := SyncTag{Registry: strings.ToLower(registry), Rule: rule}
		var updated int64
		if err := rows.Scan(&st.Repo, &st.Tag, &st.Digest, &st.State, &st.Error, &st.ConfigHash, &updated); err != nil {
			return nil, fmt.Errorf("sync tag errors: %w", err)
		}
		st.UpdatedAt = fromMicros(updated)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sync tag errors: %w", err)
	}
	return out, nil
}

// CountSyncTagErrors counts the tags of a rule whose last sync failed.
func (s *db) CountSyncTagErrors(ctx context.Context, registry, rule string) (int, error) {
	var n int
	err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM sync_tags WHERE registry = $1 AND rule = $2 AND error <> ''`,
		strings.ToLower(registry), nameKey(rule)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count sync tag errors: %w", err)
	}
	return n, nil
}
