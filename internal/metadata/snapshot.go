package metadata

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/opencontainers/go-digest"
)

// SnapshotSQLite writes a consistent copy of the database at path to dst
// (which must not exist) with VACUUM INTO. It reads in one transaction on
// a connection of its own: in WAL mode the server's writers go on
// meanwhile, and the copy is the database as of the transaction's start.
// It works whether or not a server has the database open.
func SnapshotSQLite(ctx context.Context, path, dst string) error {
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("metadata snapshot: %w", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("metadata snapshot: %w", err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `VACUUM INTO $1`, dst); err != nil {
		return fmt.Errorf("metadata snapshot: %w", err)
	}
	return nil
}

// BlobRef is a blob a metadata snapshot records (layers, configs and
// manifests alike).
type BlobRef struct {
	Digest digest.Digest
	Size   int64
}

// SnapshotInfo is what a backup's metadata snapshot holds.
type SnapshotInfo struct {
	SchemaVersion int
	Blobs         []BlobRef // in digest order
	Bytes         int64
}

// ReadSnapshot opens the snapshot at path read-only and lists its blobs.
// It checks the file is an intact SQLite database first.
func ReadSnapshot(ctx context.Context, path string) (SnapshotInfo, error) {
	var info SnapshotInfo
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return info, fmt.Errorf("no metadata snapshot at %s", path)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return info, fmt.Errorf("snapshot %s: %w", path, err)
	}
	defer db.Close()
	var check string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&check); err != nil {
		return info, fmt.Errorf("snapshot %s is not an intact database: %w", path, err)
	}
	if check != "ok" {
		return info, fmt.Errorf("snapshot %s is not an intact database: %s", path, check)
	}
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&info.SchemaVersion); err != nil {
		return info, fmt.Errorf("snapshot %s: schema version: %w", path, err)
	}
	rows, err := db.QueryContext(ctx, `SELECT digest, size FROM blobs ORDER BY digest`)
	if err != nil {
		return info, fmt.Errorf("snapshot %s: %w", path, err)
	}
	defer rows.Close()
	for rows.Next() {
		var b BlobRef
		var d string
		if err := rows.Scan(&d, &b.Size); err != nil {
			return info, fmt.Errorf("snapshot %s: %w", path, err)
		}
		if b.Digest, err = digest.Parse(d); err != nil {
			return info, fmt.Errorf("snapshot %s: blob %q: %w", path, d, err)
		}
		info.Blobs = append(info.Blobs, b)
		info.Bytes += b.Size
	}
	if err := rows.Err(); err != nil {
		return info, fmt.Errorf("snapshot %s: %w", path, err)
	}
	return info, nil
}
