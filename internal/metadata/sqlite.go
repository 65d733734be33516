// Package metadata records what the registry knows: repositories, manifests
// and the references between them, tags, blob links, and (from the
// management plane) cache rules and credential sets. SQLite is the embedded
// implementation; everything shared between replicas lives here, never in
// process memory.
package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	_ "modernc.org/sqlite" // pure-Go SQLite driver: no cgo, no external service
)

// Errors.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
	// ErrSchemaNewer: the database was migrated by a newer arca.
	ErrSchemaNewer = errors.New("database schema is newer than this arca")
)

// SchemaVersion is the schema version this binary migrates to.
func SchemaVersion() int { return len(migrations) }

// SQLite is the embedded metadata store. Writes go through one connection
// (SQLite has one writer; queuing in Go beats spinning on SQLITE_BUSY), reads
// through a pool, in WAL mode so readers never block the writer.
type SQLite struct {
	w *sql.DB
	r *sql.DB
	// stmts caches prepared read statements by query text: the hot path
	// (manifest and blob lookups) spent a quarter of its CPU preparing
	// the same few queries again on every request.
	stmts sync.Map // string -> *sql.Stmt
}

// Migrations are applied in order, once each; append, never edit. The
// schema version is the number applied (schema_migrations records each);
// a database at a higher version than len(migrations) was written by a
// newer arca and is refused (ErrSchemaNewer): an older binary might
// misread what it does not know.
var migrations = []string{
	schemaRegistry,
	schemaRules,
	schemaSync,
	schemaRateLimits,
	schemaPushed,
	schemaAccess,
	schemaUploadState,
}

// OpenSQLite opens (creating if needed) the database file at path.
func OpenSQLite(ctx context.Context, path string) (*SQLite, error) {
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
	s := &SQLite{w: w, r: r}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		if errors.Is(err, ErrSchemaNewer) {
			err = fmt.Errorf("%s: %w", path, err)
		}
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *SQLite) Close() error {
	var errs []error
	s.stmts.Range(func(_, v any) bool {
		errs = append(errs, v.(*sql.Stmt).Close())
		return true
	})
	return errors.Join(append(errs, s.r.Close(), s.w.Close())...)
}

// queryRow runs a read query through a statement prepared once (database/sql
// re-prepares it per pooled connection as needed and keeps it).
func (s *SQLite) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return s.r.QueryRowContext(ctx, q, args...) // carries the error to Scan
	}
	return st.QueryRowContext(ctx, args...)
}

func (s *SQLite) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if v, ok := s.stmts.Load(q); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := s.r.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	if v, loaded := s.stmts.LoadOrStore(q, st); loaded {
		st.Close()
		return v.(*sql.Stmt), nil
	}
	return st, nil
}

// Ping checks the database answers (readiness).
func (s *SQLite) Ping(ctx context.Context) error {
	var one int
	return s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

func (s *SQLite) migrate(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		return fmt.Errorf("metadata migrate: %w", err)
	}
	var have int
	if err := s.w.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("metadata migrate: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("%w: schema version %d, this arca knows up to %d; run the newer arca, or restore a backup taken before the upgrade", ErrSchemaNewer, have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		err := s.tx(ctx, func(tx *sql.Tx) error {
			for _, stmt := range strings.Split(migrations[v-1], ";\n") {
				if strings.TrimSpace(stmt) == "" {
					continue
				}
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d: %w", v, err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version) VALUES (?)`, v)
			return err
		})
		if err != nil {
			return fmt.Errorf("metadata migrate: %w", err)
		}
	}
	return nil
}

// tx runs fn in a write transaction.
func (s *SQLite) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("metadata begin: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("metadata commit: %w", err)
	}
	return nil
}
