package metadata

import (
	"context"
	"fmt"
	"time"
)

// UploadsBefore lists the upload sessions created before cutoff (the
// janitor forgets those whose staged bytes are gone).
func (s *SQLite) UploadsBefore(ctx context.Context, cutoff time.Time) ([]string, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id FROM uploads WHERE created_at < ?`, cutoff.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("uploads: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("uploads: %w", err)
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
