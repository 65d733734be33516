package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// db is the SQL metadata store. One implementation serves both engines:
// every query is written once in the SQL both accept ($n placeholders,
// ON CONFLICT upserts, no collations, no engine-specific LIMIT forms), and
// what truly differs (schema types, conflict codes, locking) is in dialect.
type db struct {
	w *sql.DB // writes (SQLite: one connection; PostgreSQL: the same pool as r)
	r *sql.DB // reads
	d dialect
	// stmts caches prepared read statements by query text: the hot path
	// (manifest and blob lookups) spent a quarter of its CPU preparing
	// the same few queries again on every request.
	stmts sync.Map // string -> *sql.Stmt
}

// dialect is what differs between the engines.
type dialect struct {
	name string
	// migrations are applied in order, once each; append, never edit.
	// Each is a list of statements (never split from one string).
	migrations [][]string
	// isConflict reports a unique-constraint violation, by the engine's
	// error code (never by message text).
	isConflict func(error) bool
	// lock serialises transactions on key across every process using the
	// database. SQLite needs none: its write transactions are exclusive.
	lock func(ctx context.Context, tx *sql.Tx, key string) error
	// retryable reports a transaction the engine aborted to resolve
	// concurrency (a deadlock between writers): running it again succeeds.
	retryable func(error) bool
	// snapshot begins a transaction that sees one snapshot and fails
	// (retryable) when a row it updates changed after it (garbage
	// collection's conditional updates; nil: the default already does).
	snapshot *sql.TxOptions
	// resumeIdentity moves the generator of table's identity column past
	// the rows copied in with explicit values.
	resumeIdentity func(ctx context.Context, w *sql.DB, table, col string) error
}

// Close closes the database.
func (s *db) Close() error {
	var errs []error
	s.stmts.Range(func(_, v any) bool {
		errs = append(errs, v.(*sql.Stmt).Close())
		return true
	})
	errs = append(errs, s.r.Close())
	if s.w != s.r {
		errs = append(errs, s.w.Close())
	}
	return errors.Join(errs...)
}

// Backend names the engine ("sqlite", "postgres").
func (s *db) Backend() string { return s.d.name }

// queryRow runs a read query through a statement prepared once (database/sql
// re-prepares it per pooled connection as needed and keeps it).
func (s *db) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := s.stmt(ctx, q)
	if err != nil {
		return s.r.QueryRowContext(ctx, q, args...) // carries the error to Scan
	}
	return st.QueryRowContext(ctx, args...)
}

func (s *db) stmt(ctx context.Context, q string) (*sql.Stmt, error) {
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
func (s *db) Ping(ctx context.Context) error {
	var one int
	return s.r.QueryRowContext(ctx, "SELECT 1").Scan(&one)
}

// SchemaVersion returns the version the database is migrated to.
func (s *db) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.r.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("schema version: %w", err)
	}
	return v, nil
}

// migrate applies the dialect's pending migrations, one transaction each,
// holding the migration lock so that processes starting together apply
// each exactly once. A database at a higher version than this binary
// knows was written by a newer arca and is refused (ErrSchemaNewer): an
// older binary might misread what it does not know.
func (s *db) migrate(ctx context.Context) error {
	known := len(s.d.migrations)
	for {
		done := false
		err := s.tx(ctx, func(tx *sql.Tx) error {
			if err := s.d.lock(ctx, tx, "schema_migrations"); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
				return err
			}
			var have int
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
				return err
			}
			if have > known {
				return fmt.Errorf("%w: schema version %d, this arca knows up to %d; run the newer arca, or restore a backup taken before the upgrade", ErrSchemaNewer, have, known)
			}
			if have == known {
				done = true
				return nil
			}
			v := have + 1
			for _, stmt := range s.d.migrations[v-1] {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %d: %w", v, err)
				}
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version) VALUES ($1)`, v)
			return err
		})
		if err != nil {
			if errors.Is(err, ErrSchemaNewer) {
				return err
			}
			return fmt.Errorf("metadata migrate: %w", err)
		}
		if done {
			return nil
		}
	}
}

// tx runs fn in a write transaction, again (up to 3 times) when the
// engine aborted it to break a deadlock between concurrent writers.
func (s *db) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.tx1(ctx, fn)
		if err == nil || attempt == 3 || !s.d.retryable(err) || ctx.Err() != nil {
			return err
		}
	}
}

func (s *db) tx1(ctx context.Context, fn func(*sql.Tx) error) error {
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

// conflict maps a unique-constraint violation to ErrConflict (wrapped with
// what), any other error to a wrapped error.
func (s *db) conflict(err error, what string) error {
	if s.d.isConflict(err) {
		return fmt.Errorf("%s: %w", what, ErrConflict)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// placeholders returns "$from, $from+1, ..." for n arguments.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("$" + strconv.Itoa(from+i))
	}
	return b.String()
}

// limit appends the LIMIT of a page of n (n <= 0: all, no LIMIT) as
// parameter $next, fetching one more row to tell whether more follow.
func limit(q string, next, n int, args []any) (string, []any) {
	if n <= 0 {
		return q, args
	}
	return q + " LIMIT $" + strconv.Itoa(next), append(args, n+1)
}

// Timestamps are stored as microseconds since the Unix epoch, 0 for none.
func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func fromMicros(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}

func now() int64 { return time.Now().UnixMicro() }

// nameKey is the stored key of a name that is unique ignoring case (cache
// rules, credential sets): the comparison lives here, not in a collation.
func nameKey(name string) string { return strings.ToLower(name) }
