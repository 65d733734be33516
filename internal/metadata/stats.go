package metadata

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// schemaStats: request and byte counts per rule in time buckets, for the
// portal's statistics. Writers add batched deltas (one transaction per
// flush, not a write per request); old buckets are pruned.
var schemaStats = []string{
	`CREATE TABLE rule_stats (
	bucket   INTEGER NOT NULL,
	registry TEXT NOT NULL,
	rule     TEXT NOT NULL,
	name     TEXT NOT NULL,
	value    INTEGER NOT NULL,
	PRIMARY KEY (bucket, registry, rule, name)
)`,
}

// pgSchemaStats is schemaStats for PostgreSQL.
var pgSchemaStats = []string{
	`CREATE TABLE rule_stats (
	bucket   BIGINT NOT NULL,
	registry TEXT COLLATE "C" NOT NULL,
	rule     TEXT COLLATE "C" NOT NULL,
	name     TEXT COLLATE "C" NOT NULL,
	value    BIGINT NOT NULL,
	PRIMARY KEY (bucket, registry, rule, name)
)`,
}

// StatRow is one counter of one rule in one time bucket.
type StatRow struct {
	Bucket   time.Time // start of the bucket
	Registry string
	Rule     string
	Name     string
	Value    int64
}

// AddStats adds each row's value to its bucket's counter, in one transaction.
func (s *db) AddStats(ctx context.Context, rows []StatRow) error {
	if len(rows) == 0 {
		return nil
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(ctx, `INSERT INTO rule_stats(bucket, registry, rule, name, value) VALUES ($1, $2, $3, $4, $5)
			ON CONFLICT(bucket, registry, rule, name) DO UPDATE SET value = rule_stats.value + excluded.value`)
		if err != nil {
			return fmt.Errorf("add stats: %w", err)
		}
		defer st.Close()
		for _, r := range rows {
			if _, err := st.ExecContext(ctx, micros(r.Bucket), r.Registry, r.Rule, r.Name, r.Value); err != nil {
				return fmt.Errorf("add stats: %w", err)
			}
		}
		return nil
	})
}

// ListStats returns registry's counters in buckets starting at or after since.
func (s *db) ListStats(ctx context.Context, registry string, since time.Time) ([]StatRow, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT bucket, rule, name, value FROM rule_stats WHERE registry = $1 AND bucket >= $2 ORDER BY bucket`,
		registry, micros(since))
	if err != nil {
		return nil, fmt.Errorf("list stats: %w", err)
	}
	defer rows.Close()
	var out []StatRow
	for rows.Next() {
		r := StatRow{Registry: registry}
		var b int64
		if err := rows.Scan(&b, &r.Rule, &r.Name, &r.Value); err != nil {
			return nil, fmt.Errorf("list stats: %w", err)
		}
		r.Bucket = fromMicros(b).UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list stats: %w", err)
	}
	return out, nil
}

// PruneStats deletes buckets that start before before.
func (s *db) PruneStats(ctx context.Context, before time.Time) error {
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM rule_stats WHERE bucket < $1`, micros(before)); err != nil {
			return fmt.Errorf("prune stats: %w", err)
		}
		return nil
	})
}
