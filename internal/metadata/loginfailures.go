package metadata

import (
	"context"
	"database/sql"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// schemaLoginFailures counts failed authentication attempts per throttle
// key (a source address or an identity, with the throttle's scope), so
// that a brute-force budget is the cluster's, not each replica's.
var schemaLoginFailures = []string{
	`CREATE TABLE login_failures (
	throttle_key TEXT PRIMARY KEY,
	failures     INTEGER NOT NULL,
	expires_at   BIGINT NOT NULL
)`,
	`CREATE INDEX login_failures_expires ON login_failures(expires_at)`,
}

// LoginFailures is the count of failed attempts of one key in its current
// window, which ends at Until.
type LoginFailures struct {
	N     int
	Until time.Time
}

// AddLoginFailure counts one failed attempt of key at now: in the current
// window if it has not ended, else in a new one of length window. It
// returns the count and the window's end, and removes ended windows.
func (s *db) AddLoginFailure(ctx context.Context, key string, window time.Duration, now time.Time) (LoginFailures, error) {
	var lf LoginFailures
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM login_failures WHERE expires_at <= $1 AND throttle_key <> $2`, micros(now), key); err != nil {
			return fmt.Errorf("add login failure: %w", err)
		}
		var until int64
		err := tx.QueryRowContext(ctx, `INSERT INTO login_failures(throttle_key, failures, expires_at) VALUES ($1, 1, $2)
			ON CONFLICT(throttle_key) DO UPDATE SET
				failures = CASE WHEN login_failures.expires_at <= $3 THEN 1 ELSE login_failures.failures + 1 END,
				expires_at = CASE WHEN login_failures.expires_at <= $3 THEN excluded.expires_at ELSE login_failures.expires_at END
			RETURNING failures, expires_at`, key, micros(now.Add(window)), micros(now)).Scan(&lf.N, &until)
		if err != nil {
			return fmt.Errorf("add login failure: %w", err)
		}
		lf.Until = fromMicros(until)
		return nil
	})
	return lf, err
}

// GetLoginFailures returns the counts of those keys whose window has not
// ended at now (keys without are absent).
func (s *db) GetLoginFailures(ctx context.Context, keys []string, now time.Time) (map[string]LoginFailures, error) {
	out := map[string]LoginFailures{}
	if len(keys) == 0 {
		return out, nil
	}
	args := []any{micros(now)}
	marks := make([]string, len(keys))
	for i, k := range keys {
		args = append(args, k)
		marks[i] = "$" + strconv.Itoa(i+2)
	}
	rows, err := s.r.QueryContext(ctx, `SELECT throttle_key, failures, expires_at FROM login_failures
		WHERE expires_at > $1 AND throttle_key IN (`+strings.Join(marks, ", ")+`)`, args...)
	if err != nil {
		return nil, fmt.Errorf("login failures: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k string
		var lf LoginFailures
		var until int64
		if err := rows.Scan(&k, &lf.N, &until); err != nil {
			return nil, fmt.Errorf("login failures: %w", err)
		}
		lf.Until = fromMicros(until)
		out[k] = lf
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("login failures: %w", err)
	}
	return out, nil
}
