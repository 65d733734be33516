package metadata

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// schemaUpstreamHolds records the 429 hold-backs upstream hosts asked for
// (Retry-After), so that a host that told one replica to wait is left alone
// by every replica until then: a rate limit is the cluster's, not each
// replica's.
var schemaUpstreamHolds = []string{
	`CREATE TABLE upstream_holds (
	host     TEXT PRIMARY KEY,
	until_at BIGINT NOT NULL
)`,
}

// HoldUpstream records that host (scheme://host:port) asked to be left
// alone until until. A later end replaces an earlier one, never the other
// way round; holds that ended are removed.
func (s *db) HoldUpstream(ctx context.Context, host string, until time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM upstream_holds WHERE until_at < $1`, micros(time.Now())); err != nil {
			return fmt.Errorf("hold upstream: %w", err)
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO upstream_holds(host, until_at) VALUES ($1, $2)
			ON CONFLICT(host) DO UPDATE SET until_at = excluded.until_at WHERE upstream_holds.until_at < excluded.until_at`,
			host, micros(until))
		if err != nil {
			return fmt.Errorf("hold upstream: %w", err)
		}
		return nil
	})
}

// UpstreamHolds returns the hosts held back past now, with their ends.
func (s *db) UpstreamHolds(ctx context.Context, now time.Time) (map[string]time.Time, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT host, until_at FROM upstream_holds WHERE until_at > $1`, micros(now))
	if err != nil {
		return nil, fmt.Errorf("upstream holds: %w", err)
	}
	defer rows.Close()
	out := map[string]time.Time{}
	for rows.Next() {
		var host string
		var until int64
		if err := rows.Scan(&host, &until); err != nil {
			return nil, fmt.Errorf("upstream holds: %w", err)
		}
		out[host] = fromMicros(until)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("upstream holds: %w", err)
	}
	return out, nil
}
