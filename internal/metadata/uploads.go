package metadata

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// PurgeUploads forgets upload sessions created before cutoff and returns
// their ids (so their staged bytes can go too).
func (s *SQLite) PurgeUploads(ctx context.Context, cutoff time.Time) ([]string, error) {
	var ids []string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `DELETE FROM uploads WHERE created_at < ? RETURNING id`, cutoff.UnixMilli())
		if err != nil {
			return fmt.Errorf("purge uploads: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return fmt.Errorf("purge uploads: %w", err)
			}
			ids = append(ids, id)
		}
		return rows.Err()
	})
	return ids, err
}
