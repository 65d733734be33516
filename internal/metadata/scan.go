package metadata

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// Row scanning shared by the stores' tables.

// queryRows runs query and scans each row with scan; what names the
// query in errors. An empty result is an empty (non-nil) slice.
func queryRows[T any](ctx context.Context, q querier, what string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// rowError maps a Scan error: no row is ErrNotFound, another is wrapped
// with what.
func rowError(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// jsonColumn decodes a JSON text column into v.
func jsonColumn(text string, v any, what string) error {
	if err := json.Unmarshal([]byte(text), v); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
