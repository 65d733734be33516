package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// UploadRef names an upload session and the registry it pushes to.
type UploadRef struct {
	ID       string
	Registry string
}

// UploadsBefore lists the upload sessions created before cutoff, with
// their registries (garbage collection purges the abandoned ones).
func (s *db) UploadsBefore(ctx context.Context, cutoff time.Time) ([]UploadRef, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, registry FROM uploads WHERE created_at < $1`, micros(cutoff))
	if err != nil {
		return nil, fmt.Errorf("uploads: %w", err)
	}
	defer rows.Close()
	var refs []UploadRef
	for rows.Next() {
		var u UploadRef
		if err := rows.Scan(&u.ID, &u.Registry); err != nil {
			return nil, fmt.Errorf("uploads: %w", err)
		}
		refs = append(refs, u)
	}
	return refs, rows.Err()
}

// The upload state migration keeps an upload session's progress in its
// row, so that any replica can continue it: staged_size is how many bytes
// it holds, state the ingest writer's opaque state (staged parts, hash
// states).
var (
	sqliteUploadState = []string{
		`ALTER TABLE uploads ADD COLUMN staged_size INTEGER NOT NULL DEFAULT 0`,
		`ALTER TABLE uploads ADD COLUMN state BLOB`,
	}
	pgUploadState = []string{
		`ALTER TABLE uploads ADD COLUMN staged_size BIGINT NOT NULL DEFAULT 0`,
		`ALTER TABLE uploads ADD COLUMN state BYTEA`,
	}
)

// LoadUploadState returns how many bytes upload id holds and the state
// saved with them (nil for a new session), or ErrNotFound.
func (s *db) LoadUploadState(ctx context.Context, id string) (int64, []byte, error) {
	var size int64
	var state []byte
	err := s.queryRow(ctx, `SELECT staged_size, state FROM uploads WHERE id = $1`, id).Scan(&size, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil, ErrNotFound
	}
	if err != nil {
		return 0, nil, fmt.Errorf("load upload state: %w", err)
	}
	return size, state, nil
}

// SaveUploadState records that upload id now holds size bytes described by
// state, only if it still holds from bytes: of two requests writing the
// same session, one wins and the other gets ErrConflict (ErrNotFound when
// the session is gone).
func (s *db) SaveUploadState(ctx context.Context, id string, from, size int64, state []byte) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE uploads SET staged_size = $1, state = $2 WHERE id = $3 AND staged_size = $4`, size, state, id, from)
		if err != nil {
			return fmt.Errorf("save upload state: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return err
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM uploads WHERE id = $1`, id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return fmt.Errorf("save upload state: %w", err)
		}
		return fmt.Errorf("%w: upload %s no longer holds %d bytes", ErrConflict, id, from)
	})
}
