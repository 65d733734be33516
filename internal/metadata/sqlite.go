package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"modernc.org/sqlite" // pure-Go SQLite driver: no cgo, no external service
	sqlite3 "modernc.org/sqlite/lib"
)

// SchemaVersion is the embedded (SQLite) schema version this binary
// migrates to; backups are SQLite snapshots and carry it.
func SchemaVersion() int { return len(sqliteMigrations) }

// sqliteMigrations: the version is the number applied (schema_migrations
// records each).
var sqliteMigrations = [][]string{
	schemaRegistry,
	schemaRules,
	schemaSync,
	schemaRateLimits,
	schemaPushed,
	schemaAccess,
	sqliteNormalise,
	schemaStats,
	identitySchema(""),
	sqliteUploadState,
	sqliteGC,
	sqliteLifecycle,
	schemaFetchLeases,
	setIdentityAndConditions,
	schemaPortalSessions,
	schemaManifestAttrs,
	schemaIdentitySecretExpiry,
	schemaOperationProgress,
	schemaUpstreamHolds,
	schemaLoginFailures,
	schemaFetchLeaseOutcome,
	schemaManifestVariant,
}

var sqliteDialect = dialect{
	name:       "sqlite",
	migrations: sqliteMigrations,
	isConflict: func(err error) bool {
		var se *sqlite.Error
		if !errors.As(err, &se) {
			return false
		}
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	},
	// Write transactions begin IMMEDIATE: they already exclude each other
	// across processes.
	lock: func(context.Context, *sql.Tx, string) error { return nil },
	// One writer at a time (busy_timeout waits for other processes).
	retryable: func(error) bool { return false },
	// AUTOINCREMENT continues after the largest key, explicit ones included.
	resumeIdentity: func(context.Context, *sql.DB, string, string) error { return nil },
}

// OpenSQLite opens (creating if needed) the embedded database file at
// path. Writes go through one connection (SQLite has one writer; queuing
// in Go beats spinning on SQLITE_BUSY), reads through a pool, in WAL mode
// so readers never block the writer.
func OpenSQLite(ctx context.Context, path string) (Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	// synchronous(FULL): a committed transaction survives power loss, not
	// only a process crash.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)"
	w, err := sql.Open("sqlite", dsn+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("metadata open: %w", err)
	}
	w.SetMaxOpenConns(1)
	r, err := sql.Open("sqlite", dsn+"&_pragma=query_only(ON)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("metadata open: %w", err)
	}
	r.SetMaxOpenConns(16)
	r.SetMaxIdleConns(16)
	s := &db{w: w, r: r, d: sqliteDialect}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		if errors.Is(err, ErrSchemaNewer) {
			err = fmt.Errorf("%s: %w", path, err)
		}
		return nil, err
	}
	return s, nil
}

// sqliteNormalise (migration 7) takes the dialect out of the data: names
// unique ignoring case get a lower-cased key column instead of COLLATE
// NOCASE (tables rebuilt: SQLite cannot drop a collation), sync state keys
// rules by that key, and every timestamp is in microseconds (registry,
// sync and access tables held milliseconds).
var sqliteNormalise = []string{
	`CREATE TABLE cache_rules_v6 (
	registry           TEXT NOT NULL,
	name_key           TEXT NOT NULL,
	name               TEXT NOT NULL,
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
	PRIMARY KEY (registry, name_key),
	UNIQUE (registry, target)
)`,
	`INSERT INTO cache_rules_v6 SELECT registry, lower(name), name, source, target, credential_set, identity, sync_mode,
	sync_referrers, filters, sync_status, provisioning_state, created_at, modified_at FROM cache_rules`,
	`DROP TABLE cache_rules`,
	`ALTER TABLE cache_rules_v6 RENAME TO cache_rules`,
	`CREATE TABLE credential_sets_v6 (
	registry           TEXT NOT NULL,
	name_key           TEXT NOT NULL,
	name               TEXT NOT NULL,
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
	PRIMARY KEY (registry, name_key)
)`,
	`INSERT INTO credential_sets_v6 SELECT registry, lower(name), name, login_server, username_ref, password_ref, health_status,
	health_code, health_message, principal_id, provisioning_state, created_at, modified_at FROM credential_sets`,
	`DROP TABLE credential_sets`,
	`ALTER TABLE credential_sets_v6 RENAME TO credential_sets`,
	`CREATE TABLE sync_leases_v6 (
	registry   TEXT NOT NULL,
	rule       TEXT NOT NULL,
	holder     TEXT NOT NULL,
	expires_at INTEGER NOT NULL,
	PRIMARY KEY (registry, rule)
)`,
	`INSERT OR IGNORE INTO sync_leases_v6 SELECT registry, lower(rule), holder, expires_at * 1000 FROM sync_leases`,
	`DROP TABLE sync_leases`,
	`ALTER TABLE sync_leases_v6 RENAME TO sync_leases`,
	`CREATE TABLE sync_runs_v6 (
	registry       TEXT NOT NULL,
	rule           TEXT NOT NULL,
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
	`INSERT OR IGNORE INTO sync_runs_v6 SELECT registry, lower(rule), run_id, result, started_at * 1000, ended_at * 1000, next_at * 1000,
	tags_synced, tags_unchanged, tags_excluded, tags_failed, bytes_fetched, error, config_hash FROM sync_runs`,
	`DROP TABLE sync_runs`,
	`ALTER TABLE sync_runs_v6 RENAME TO sync_runs`,
	`CREATE TABLE sync_tags_v6 (
	registry    TEXT NOT NULL,
	rule        TEXT NOT NULL,
	repo        TEXT NOT NULL,
	tag         TEXT NOT NULL,
	digest      TEXT NOT NULL DEFAULT '',
	state       TEXT NOT NULL,
	error       TEXT NOT NULL DEFAULT '',
	config_hash TEXT NOT NULL DEFAULT '',
	updated_at  INTEGER NOT NULL,
	PRIMARY KEY (registry, rule, repo, tag)
)`,
	`INSERT OR IGNORE INTO sync_tags_v6 SELECT registry, lower(rule), repo, tag, digest, state, error, config_hash, updated_at * 1000 FROM sync_tags`,
	`DROP TABLE sync_tags`,
	`ALTER TABLE sync_tags_v6 RENAME TO sync_tags`,
	`CREATE INDEX sync_tags_errors ON sync_tags(registry, rule) WHERE error <> ''`,
	`UPDATE repositories SET created_at = created_at * 1000`,
	`UPDATE blobs SET created_at = created_at * 1000`,
	`UPDATE manifests SET created_at = created_at * 1000`,
	`UPDATE tags SET updated_at = updated_at * 1000, checked_at = checked_at * 1000`,
	`UPDATE uploads SET created_at = created_at * 1000`,
	`UPDATE registries SET created_at = created_at * 1000`,
	`UPDATE upstream_ratelimits SET observed_at = observed_at * 1000`,
	`CREATE TABLE scope_maps_v7 (
	registry    TEXT NOT NULL,
	name_key    TEXT NOT NULL,
	name        TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	actions     TEXT NOT NULL,
	created_at  INTEGER NOT NULL,
	modified_at INTEGER NOT NULL,
	PRIMARY KEY (registry, name_key)
)`,
	`INSERT OR IGNORE INTO scope_maps_v7 SELECT registry, lower(name), name, description, actions, created_at * 1000, modified_at * 1000 FROM scope_maps`,
	`DROP TABLE scope_maps`,
	`ALTER TABLE scope_maps_v7 RENAME TO scope_maps`,
	`CREATE TABLE tokens_v7 (
	registry    TEXT NOT NULL,
	name_key    TEXT NOT NULL,
	name        TEXT NOT NULL,
	scope_map   TEXT NOT NULL DEFAULT '',
	status      TEXT NOT NULL,
	passwords   TEXT NOT NULL DEFAULT '[]',
	created_at  INTEGER NOT NULL,
	modified_at INTEGER NOT NULL,
	PRIMARY KEY (registry, name_key)
)`,
	`INSERT OR IGNORE INTO tokens_v7 SELECT registry, lower(name), name, scope_map, status, passwords, created_at * 1000, modified_at * 1000 FROM tokens`,
	`DROP TABLE tokens`,
	`ALTER TABLE tokens_v7 RENAME TO tokens`,
	`CREATE TABLE principals_v7 (
	name_key   TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	role       TEXT NOT NULL,
	registry   TEXT NOT NULL DEFAULT '',
	salt       BLOB NOT NULL,
	hash       BLOB NOT NULL,
	created_at INTEGER NOT NULL
)`,
	`INSERT OR IGNORE INTO principals_v7 SELECT lower(name), name, role, registry, salt, hash, created_at * 1000 FROM principals`,
	`DROP TABLE principals`,
	`ALTER TABLE principals_v7 RENAME TO principals`,
	`UPDATE signing_keys SET created_at = created_at * 1000`,
	`UPDATE refresh_tokens SET created_at = created_at * 1000, expires_at = expires_at * 1000`,
	`UPDATE audit_log SET at = at * 1000`,
}
