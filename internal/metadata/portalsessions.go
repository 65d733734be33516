package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// schemaPortalSessions holds the web portal's browser sessions, so that a
// browser signed in on one replica is signed in on all. A row records who
// signed in, never the management token: the principal's name and a stamp
// of its secret as it was at sign-in (a token change ends the session).
// The key is the SHA-256 of the session ID (the cookie's value), so the
// table's contents cannot be replayed as cookies.
var schemaPortalSessions = []string{
	`CREATE TABLE portal_sessions (
	id_hash    TEXT PRIMARY KEY,
	principal  TEXT NOT NULL,
	stamp      TEXT NOT NULL,
	csrf       TEXT NOT NULL,
	created_at BIGINT NOT NULL,
	last_used  BIGINT NOT NULL
)`,
	`CREATE INDEX portal_sessions_last_used ON portal_sessions(last_used)`,
}

// PortalSession is one signed-in browser of the web portal.
type PortalSession struct {
	IDHash    string // hex SHA-256 of the session ID
	Principal string // the management principal that signed in
	Stamp     string // the principal's secret stamp at sign-in
	CSRF      string // the session's CSRF token
	Created   time.Time
	LastUsed  time.Time
}

// PutPortalSession records a new session (ErrConflict if its ID exists).
func (s *db) PutPortalSession(ctx context.Context, p PortalSession) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO portal_sessions(id_hash, principal, stamp, csrf, created_at, last_used) VALUES ($1, $2, $3, $4, $5, $6)`,
			p.IDHash, p.Principal, p.Stamp, p.CSRF, p.Created.UnixMicro(), p.LastUsed.UnixMicro())
		if s.d.isConflict(err) {
			return ErrConflict
		}
		if err != nil {
			return fmt.Errorf("put portal session: %w", err)
		}
		return nil
	})
}

// GetPortalSession returns the session with idHash (ErrNotFound if none).
func (s *db) GetPortalSession(ctx context.Context, idHash string) (PortalSession, error) {
	p := PortalSession{IDHash: idHash}
	var c, u int64
	err := s.r.QueryRowContext(ctx, `SELECT principal, stamp, csrf, created_at, last_used FROM portal_sessions WHERE id_hash = $1`, idHash).
		Scan(&p.Principal, &p.Stamp, &p.CSRF, &c, &u)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("get portal session: %w", err)
	}
	p.Created, p.LastUsed = fromMicros(c), fromMicros(u)
	return p, nil
}

// TouchPortalSession moves a session's last use forward to at (never back).
func (s *db) TouchPortalSession(ctx context.Context, idHash string, at time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE portal_sessions SET last_used = $1 WHERE id_hash = $2 AND last_used < $1`, at.UnixMicro(), idHash); err != nil {
			return fmt.Errorf("touch portal session: %w", err)
		}
		return nil
	})
}

// DeletePortalSession ends a session; ending one that is gone is no error.
func (s *db) DeletePortalSession(ctx context.Context, idHash string) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM portal_sessions WHERE id_hash = $1`, idHash); err != nil {
			return fmt.Errorf("delete portal session: %w", err)
		}
		return nil
	})
}

// PrunePortalSessions deletes the sessions last used before cutoff and
// returns how many.
func (s *db) PrunePortalSessions(ctx context.Context, cutoff time.Time) (int, error) {
	var n int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM portal_sessions WHERE last_used < $1`, cutoff.UnixMicro())
		if err != nil {
			return fmt.Errorf("prune portal sessions: %w", err)
		}
		n, err = res.RowsAffected()
		if err != nil {
			return fmt.Errorf("prune portal sessions: %w", err)
		}
		return nil
	})
	return int(n), err
}
