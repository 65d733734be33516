package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

var schemaRateLimits = []string{
	`CREATE TABLE upstream_ratelimits (
	source      TEXT PRIMARY KEY,
	lim         INTEGER NOT NULL,
	remaining   INTEGER NOT NULL,
	window_ms   INTEGER NOT NULL,
	observed_at INTEGER NOT NULL
)`,
}

// RateLimit is an upstream's last reported pull budget for one source (a
// credential set, or anonymous pulls, on one upstream host).
type RateLimit struct {
	Limit      int
	Remaining  int
	Window     time.Duration
	ObservedAt time.Time
}

// RateLimitSource names the budget of credential set credKey
// ("<registry>/<name>", "" for anonymous) on upstream host.
func RateLimitSource(credKey, host string) string { return credKey + "@" + host }

// RecordRateLimit stores the latest observation for source.
func (s *db) RecordRateLimit(ctx context.Context, source string, rl RateLimit) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO upstream_ratelimits(source, lim, remaining, window_ms, observed_at) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT(source) DO UPDATE SET lim = excluded.lim, remaining = excluded.remaining, window_ms = excluded.window_ms, observed_at = excluded.observed_at
			WHERE excluded.observed_at >= upstream_ratelimits.observed_at`,
			source, rl.Limit, rl.Remaining, rl.Window.Milliseconds(), micros(rl.ObservedAt))
		if err != nil {
			return fmt.Errorf("record rate limit: %w", err)
		}
		return nil
	})
}

// GetRateLimit returns the latest observation for source.
func (s *db) GetRateLimit(ctx context.Context, source string) (RateLimit, error) {
	var rl RateLimit
	var window, observed int64
	err := s.r.QueryRowContext(ctx, `SELECT lim, remaining, window_ms, observed_at FROM upstream_ratelimits WHERE source = $1`, source).
		Scan(&rl.Limit, &rl.Remaining, &window, &observed)
	if errors.Is(err, sql.ErrNoRows) {
		return rl, ErrNotFound
	}
	if err != nil {
		return rl, fmt.Errorf("get rate limit: %w", err)
	}
	rl.Window, rl.ObservedAt = time.Duration(window)*time.Millisecond, fromMicros(observed)
	return rl, nil
}
