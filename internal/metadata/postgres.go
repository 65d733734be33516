package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgreSQL through pgx's database/sql driver rather than pgxpool: the
// queries, scans and transactions are the ones SQLite runs (one code path,
// one conformance suite), and database/sql's pool and prepared statements
// are what the hot path needs. pgx parses any libpq URL or key=value
// string and reads PGPASSWORD, PGPASSFILE/~/.pgpass and the other PG*
// variables, so passwords need not be in the URL.

// pgMigrations is PostgreSQL's own migration set (versions count
// separately from SQLite's). Text keys that are ordered or range-scanned
// (pagination, prefixes) use the "C" collation: byte order, as SQLite
// compares, whatever the database's locale.
var pgMigrations = [][]string{pgSchema, pgSchemaStats, identitySchema(` COLLATE "C"`), pgUploadState, pgGC, pgLifecycle, schemaFetchLeases, setIdentityAndConditions, schemaPortalSessions, schemaManifestAttrs, schemaIdentitySecretExpiry,
	schemaOperationProgress, schemaUpstreamHolds, schemaLoginFailures, schemaFetchLeaseOutcome, schemaManifestVariant}

var pgSchema = []string{
	`CREATE TABLE repositories (
	registry   TEXT COLLATE "C" NOT NULL,
	name       TEXT COLLATE "C" NOT NULL,
	created_at BIGINT NOT NULL,
	pushed     INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (registry, name)
)`,
	`CREATE TABLE blobs (
	digest     TEXT COLLATE "C" PRIMARY KEY,
	size       BIGINT NOT NULL,
	created_at BIGINT NOT NULL
)`,
	`CREATE TABLE repo_blobs (
	registry TEXT COLLATE "C" NOT NULL,
	repo     TEXT COLLATE "C" NOT NULL,
	digest   TEXT COLLATE "C" NOT NULL REFERENCES blobs(digest),
	PRIMARY KEY (registry, repo, digest)
)`,
	`CREATE INDEX repo_blobs_digest ON repo_blobs(digest)`,
	`CREATE TABLE manifests (
	registry      TEXT COLLATE "C" NOT NULL,
	repo          TEXT COLLATE "C" NOT NULL,
	digest        TEXT COLLATE "C" NOT NULL,
	media_type    TEXT NOT NULL,
	size          BIGINT NOT NULL,
	artifact_type TEXT NOT NULL DEFAULT '',
	subject       TEXT COLLATE "C" NOT NULL DEFAULT '',
	annotations   TEXT NOT NULL DEFAULT '',
	created_at    BIGINT NOT NULL,
	PRIMARY KEY (registry, repo, digest)
)`,
	`CREATE INDEX manifests_subject ON manifests(registry, repo, subject) WHERE subject <> ''`,
	`CREATE TABLE manifest_refs (
	registry TEXT COLLATE "C" NOT NULL,
	repo     TEXT COLLATE "C" NOT NULL,
	manifest TEXT COLLATE "C" NOT NULL,
	child    TEXT COLLATE "C" NOT NULL,
	kind     TEXT NOT NULL,
	PRIMARY KEY (registry, repo, manifest, child)
)`,
	`CREATE INDEX manifest_refs_child ON manifest_refs(child)`,
	`CREATE TABLE tags (
	registry   TEXT COLLATE "C" NOT NULL,
	repo       TEXT COLLATE "C" NOT NULL,
	tag        TEXT COLLATE "C" NOT NULL,
	digest     TEXT COLLATE "C" NOT NULL,
	updated_at BIGINT NOT NULL,
	checked_at BIGINT NOT NULL DEFAULT 0,
	PRIMARY KEY (registry, repo, tag)
)`,
	`CREATE INDEX tags_digest ON tags(registry, repo, digest)`,
	`CREATE TABLE uploads (
	id         TEXT PRIMARY KEY,
	registry   TEXT NOT NULL,
	repo       TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	owner      TEXT NOT NULL DEFAULT ''
)`,
	`CREATE INDEX uploads_owner ON uploads(owner, created_at) WHERE owner <> ''`,
	`CREATE TABLE registries (
	name                  TEXT COLLATE "C" PRIMARY KEY,
	hosts                 TEXT NOT NULL DEFAULT '[]',
	created_at            BIGINT NOT NULL,
	admin_enabled         INTEGER NOT NULL DEFAULT 0,
	anonymous_pull        INTEGER NOT NULL DEFAULT 0,
	admin_password1       TEXT NOT NULL DEFAULT '',
	admin_password2       TEXT NOT NULL DEFAULT '',
	sku                   TEXT NOT NULL DEFAULT 'Standard',
	tags                  TEXT NOT NULL DEFAULT '{}',
	public_network_access TEXT NOT NULL DEFAULT 'Enabled',
	data_endpoint_enabled INTEGER NOT NULL DEFAULT 0,
	role_assignment_mode  TEXT NOT NULL DEFAULT 'LegacyRegistryPermissions',
	managed               INTEGER NOT NULL DEFAULT 0
)`,
	`CREATE TABLE cache_rules (
	registry           TEXT COLLATE "C" NOT NULL,
	name_key           TEXT COLLATE "C" NOT NULL,
	name               TEXT NOT NULL,
	source             TEXT NOT NULL,
	target             TEXT COLLATE "C" NOT NULL,
	credential_set     TEXT NOT NULL DEFAULT '',
	identity           TEXT NOT NULL DEFAULT '',
	sync_mode          TEXT NOT NULL DEFAULT '',
	sync_referrers     TEXT NOT NULL DEFAULT '',
	filters            TEXT NOT NULL DEFAULT '',
	sync_status        TEXT NOT NULL DEFAULT '',
	provisioning_state TEXT NOT NULL,
	created_at         BIGINT NOT NULL,
	modified_at        BIGINT NOT NULL,
	PRIMARY KEY (registry, name_key),
	UNIQUE (registry, target)
)`,
	`CREATE TABLE credential_sets (
	registry           TEXT COLLATE "C" NOT NULL,
	name_key           TEXT COLLATE "C" NOT NULL,
	name               TEXT NOT NULL,
	login_server       TEXT NOT NULL,
	username_ref       TEXT NOT NULL,
	password_ref       TEXT NOT NULL,
	health_status      TEXT NOT NULL DEFAULT '',
	health_code        TEXT NOT NULL DEFAULT '',
	health_message     TEXT NOT NULL DEFAULT '',
	principal_id       TEXT NOT NULL,
	provisioning_state TEXT NOT NULL,
	created_at         BIGINT NOT NULL,
	modified_at        BIGINT NOT NULL,
	PRIMARY KEY (registry, name_key)
)`,
	`CREATE TABLE rules_generation (
	registry   TEXT PRIMARY KEY,
	generation BIGINT NOT NULL
)`,
	`CREATE TABLE operations (
	id         TEXT PRIMARY KEY,
	registry   TEXT NOT NULL,
	resource   TEXT NOT NULL,
	status     TEXT NOT NULL,
	error_code TEXT NOT NULL DEFAULT '',
	error_msg  TEXT NOT NULL DEFAULT '',
	started_at BIGINT NOT NULL,
	ended_at   BIGINT NOT NULL DEFAULT 0
)`,
	`CREATE INDEX operations_started ON operations(started_at)`,
	`CREATE TABLE sync_leases (
	registry   TEXT COLLATE "C" NOT NULL,
	rule       TEXT COLLATE "C" NOT NULL,
	holder     TEXT NOT NULL,
	expires_at BIGINT NOT NULL,
	PRIMARY KEY (registry, rule)
)`,
	`CREATE TABLE sync_runs (
	registry       TEXT COLLATE "C" NOT NULL,
	rule           TEXT COLLATE "C" NOT NULL,
	run_id         TEXT NOT NULL,
	result         TEXT NOT NULL,
	started_at     BIGINT NOT NULL,
	ended_at       BIGINT NOT NULL DEFAULT 0,
	next_at        BIGINT NOT NULL DEFAULT 0,
	tags_synced    INTEGER NOT NULL DEFAULT 0,
	tags_unchanged INTEGER NOT NULL DEFAULT 0,
	tags_excluded  INTEGER NOT NULL DEFAULT 0,
	tags_failed    INTEGER NOT NULL DEFAULT 0,
	bytes_fetched  BIGINT NOT NULL DEFAULT 0,
	error          TEXT NOT NULL DEFAULT '',
	config_hash    TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (registry, rule)
)`,
	`CREATE TABLE sync_tags (
	registry    TEXT COLLATE "C" NOT NULL,
	rule        TEXT COLLATE "C" NOT NULL,
	repo        TEXT COLLATE "C" NOT NULL,
	tag         TEXT COLLATE "C" NOT NULL,
	digest      TEXT NOT NULL DEFAULT '',
	state       TEXT NOT NULL,
	error       TEXT NOT NULL DEFAULT '',
	config_hash TEXT NOT NULL DEFAULT '',
	updated_at  BIGINT NOT NULL,
	PRIMARY KEY (registry, rule, repo, tag)
)`,
	`CREATE INDEX sync_tags_errors ON sync_tags(registry, rule) WHERE error <> ''`,
	`CREATE TABLE upstream_ratelimits (
	source      TEXT PRIMARY KEY,
	lim         INTEGER NOT NULL,
	remaining   INTEGER NOT NULL,
	window_ms   BIGINT NOT NULL,
	observed_at BIGINT NOT NULL
)`,
	`CREATE TABLE scope_maps (
	registry    TEXT COLLATE "C" NOT NULL,
	name_key    TEXT COLLATE "C" NOT NULL,
	name        TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	actions     TEXT NOT NULL,
	created_at  BIGINT NOT NULL,
	modified_at BIGINT NOT NULL,
	PRIMARY KEY (registry, name_key)
)`,
	`CREATE TABLE tokens (
	registry    TEXT COLLATE "C" NOT NULL,
	name_key    TEXT COLLATE "C" NOT NULL,
	name        TEXT NOT NULL,
	scope_map   TEXT NOT NULL DEFAULT '',
	status      TEXT NOT NULL,
	passwords   TEXT NOT NULL DEFAULT '[]',
	created_at  BIGINT NOT NULL,
	modified_at BIGINT NOT NULL,
	PRIMARY KEY (registry, name_key)
)`,
	`CREATE TABLE signing_keys (
	kid        TEXT COLLATE "C" PRIMARY KEY,
	secret     BYTEA NOT NULL,
	created_at BIGINT NOT NULL
)`,
	`CREATE TABLE refresh_tokens (
	hash       TEXT PRIMARY KEY,
	registry   TEXT NOT NULL,
	kind       TEXT NOT NULL,
	subject    TEXT NOT NULL,
	stamp      TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	revoked    INTEGER NOT NULL DEFAULT 0
)`,
	`CREATE INDEX refresh_tokens_expiry ON refresh_tokens(expires_at)`,
	`CREATE TABLE principals (
	name_key   TEXT COLLATE "C" PRIMARY KEY,
	name       TEXT NOT NULL,
	role       TEXT NOT NULL,
	registry   TEXT NOT NULL DEFAULT '',
	salt       BYTEA NOT NULL,
	hash       BYTEA NOT NULL,
	created_at BIGINT NOT NULL
)`,
	`CREATE TABLE audit_log (
	id       BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
	at       BIGINT NOT NULL,
	who      TEXT NOT NULL,
	action   TEXT NOT NULL,
	resource TEXT NOT NULL,
	result   TEXT NOT NULL,
	remote   TEXT NOT NULL DEFAULT ''
)`,
	`CREATE INDEX audit_log_at ON audit_log(at)`,
}

var pgDialect = dialect{
	name:       "postgres",
	migrations: pgMigrations,
	isConflict: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && pe.Code == "23505" // unique_violation
	},
	retryable: func(err error) bool {
		var pe *pgconn.PgError
		return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") // deadlock_detected, serialization_failure
	},
	snapshot: &sql.TxOptions{Isolation: sql.LevelRepeatableRead},
	resumeIdentity: func(ctx context.Context, w *sql.DB, table, col string) error {
		_, err := w.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('`+table+`', '`+col+`'), COALESCE(MAX(`+col+`), 0) + 1, false) FROM `+table)
		return err
	},
	// A transaction-scoped advisory lock: held in the database, so it
	// serialises every replica, and released at commit or rollback.
	lock: func(ctx context.Context, tx *sql.Tx, key string) error {
		if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(hashtext($1))`, "arca:"+key); err != nil {
			return fmt.Errorf("lock %s: %w", key, err)
		}
		return nil
	},
}

// OpenPostgres connects to the PostgreSQL database dsn (a libpq URL or
// key=value string) and migrates it. Errors never carry dsn: it may hold
// a password.
func OpenPostgres(ctx context.Context, dsn string) (Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors redact the password themselves.
		return nil, fmt.Errorf("metadata postgres: %w", err)
	}
	p := sql.OpenDB(stdlib.GetConnector(*cfg))
	p.SetMaxOpenConns(16)
	p.SetMaxIdleConns(16)
	s := &db{w: p, r: p, d: pgDialect}
	if err := p.PingContext(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("metadata postgres %s: %w", describe(&cfg.Config), err)
	}
	if err := s.migrate(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("metadata postgres %s: %w", describe(&cfg.Config), err)
	}
	return s, nil
}

// describe names a database without its password.
func describe(cfg *pgconn.Config) string {
	return fmt.Sprintf("%s@%s:%d/%s", cfg.User, cfg.Host, cfg.Port, cfg.Database)
}
