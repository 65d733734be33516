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

	_ "modernc.org/sqlite" // pure-Go SQLite driver: no cgo, no external service
)

// Errors.
var (
	ErrNotFound = errors.New("not found")
	ErrConflict = errors.New("conflict")
)

// SQLite is the embedded metadata store. Writes go through one connection
// (SQLite has one writer; queuing in Go beats spinning on SQLITE_BUSY), reads
// through a pool, in WAL mode so readers never block the writer.
type SQLite struct {
	w *sql.DB
	r *sql.DB
}

// Migrations are applied in order, once each; append, never edit.
var migrations = []string{
	schemaRegistry,
	schemaRules,
	schemaSync,
	schemaRateLimits,
	schemaPushed,
	schemaAccess,
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
		return nil, err
	}
	return s, nil
}

// Close closes the database.
func (s *SQLite) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
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
