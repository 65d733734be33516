// Package backup copies an arca data directory's state to a backup
// directory (or an S3 prefix) and back. A backup has a data directory's
// layout:
//
//	arca.db         consistent snapshot of the metadata (SQLite VACUUM INTO)
//	blobs/          blob store (blobs/<alg>/<xx>/<hex>) holding every blob
//	                the snapshot records, manifests included
//	backup.json     what the last backup wrote (Result)
//
// In S3 (s3://BUCKET/PREFIX) arca.db and backup.json are keys under
// PREFIX, beside the blobs in the S3 blob backend's layout
// (PREFIX/blobs/<alg>/<hex>).
//
// Backups are incremental: blobs already in the backup are not copied
// again. A new snapshot replaces the old one only once every blob it
// records is in the backup, so an interrupted backup leaves the previous
// one whole. Restore verifies every blob's digest before it declares
// success, and writes nothing into the data directory until all passed.
package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/metadata"
)

// Files of a data or backup directory.
const (
	DBFile     = "arca.db"
	BlobsDir   = "blobs"
	ResultFile = "backup.json"
)

// Source is the arca whose state is backed up: a running server through
// its management API, or a data directory.
type Source interface {
	// SnapshotTo writes a consistent metadata snapshot to path (which
	// does not exist).
	SnapshotTo(ctx context.Context, path string) error
	// OpenBlob streams blob d.
	OpenBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error)
}

// Progress hears how a backup or restore advances. Calls come from one
// goroutine.
type Progress interface {
	// Phase starts a step that will handle items items of bytes bytes.
	Phase(name string, items int, bytes int64)
	// Advance reports items done (and bytes moved) since the last call.
	Advance(items int, bytes int64)
}

// Result is what a backup or restore did.
type Result struct {
	Dir           string       `json:"dir"`
	SchemaVersion int          `json:"schemaVersion"`
	Blobs         int          `json:"blobs"`
	Bytes         int64        `json:"bytes"`
	CopiedBlobs   int          `json:"copiedBlobs"`
	CopiedBytes   int64        `json:"copiedBytes"`
	Finished      armtime.Time `json:"finished,omitzero"`
}

type nopProgress struct{}

func (nopProgress) Phase(string, int, int64) {}
func (nopProgress) Advance(int, int64)       {}

// Backup brings the backup at to (a directory, or s3://BUCKET/PREFIX with
// the S3 blob backend's parameters and credentials) up to date with src.
// On error (ctx cancelled included) the Result says what was copied so
// far; the previous snapshot there, if any, is kept.
func Backup(ctx context.Context, src Source, to string, p Progress) (Result, error) {
	if p == nil {
		p = nopProgress{}
	}
	res := Result{Dir: to}
	loc, err := openLocation(ctx, to, true)
	if err != nil {
		return res, fmt.Errorf("backup: %w", err)
	}
	defer loc.close()
	store := loc.blobs()
	p.Phase("metadata snapshot", 1, 0)
	partial, err := loc.stage(DBFile)
	if err != nil {
		return res, fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(partial) // gone after put; left by a failed backup
	if err := src.SnapshotTo(ctx, partial); err != nil {
		return res, fmt.Errorf("backup: %w", err)
	}
	// The snapshot holds token hashes and JWT signing keys: owner only.
	if err := os.Chmod(partial, 0o600); err != nil {
		return res, fmt.Errorf("backup: %w", err)
	}
	info, err := metadata.ReadSnapshot(ctx, partial)
	if err != nil {
		return res, fmt.Errorf("backup: %w", err)
	}
	p.Advance(1, 0)
	res.SchemaVersion, res.Blobs, res.Bytes = info.SchemaVersion, len(info.Blobs), info.Bytes

	p.Phase("blobs", len(info.Blobs), info.Bytes)
	for _, b := range info.Blobs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if size, err := store.Stat(ctx, b.Digest); err == nil && size == b.Size {
			p.Advance(1, b.Size)
			continue // incremental: verified when it was copied
		}
		n, err := copyBlob(ctx, store, b, func() (io.ReadCloser, error) { return src.OpenBlob(ctx, b.Digest) })
		if err != nil {
			return res, fmt.Errorf("backup: blob %s: %w", b.Digest, err)
		}
		res.CopiedBlobs++
		res.CopiedBytes += n
		p.Advance(1, n)
	}
	if err := loc.put(ctx, DBFile, partial); err != nil {
		return res, fmt.Errorf("backup: %w", err)
	}
	res.Finished = armtime.Of(time.Now().UTC())
	return res, writeResult(ctx, loc, res)
}

// copyBlob stages what open streams in store and commits it as b through
// the verifying ingest, which refuses bytes whose digest or size is not b's.
func copyBlob(ctx context.Context, store blobstore.Backend, b metadata.BlobRef, open func() (io.ReadCloser, error)) (int64, error) {
	r, err := open()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	w, err := (&content.Store{Blobs: store}).NewWriter(ctx, b.Digest, b.Size)
	if err != nil {
		return 0, err
	}
	n, err := w.ReadFrom(r)
	if err != nil {
		w.Cancel()
		return n, err
	}
	return n, w.Commit(ctx, b.Digest, b.Size)
}

func writeResult(ctx context.Context, loc location, res Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := loc.stage(ResultFile)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := loc.put(ctx, ResultFile, tmp); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// CorruptError says which blob of a backup failed verification.
type CorruptError struct {
	Digest digest.Digest
	Err    error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("backup is corrupt: blob %s: %v", e.Digest, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// Restore fills dataDir, which must not exist or be empty, from the backup
// at from (a directory or an s3:// URL, as for Backup). It stages
// everything in a sibling directory, verifying each blob's digest and
// size as it copies, and moves it into place only when all passed: a
// corrupt backup is refused with the digest that failed and leaves
// dataDir as it was.
func Restore(ctx context.Context, from, dataDir string, p Progress) (Result, error) {
	if p == nil {
		p = nopProgress{}
	}
	res := Result{Dir: dataDir}
	if err := checkFresh(dataDir); err != nil {
		return res, err
	}
	loc, err := openLocation(ctx, from, false)
	if err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	defer loc.close()
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(dataDir)), 0o755); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	staging, err := os.MkdirTemp(filepath.Dir(filepath.Clean(dataDir)), "."+filepath.Base(dataDir)+".restoring-")
	if err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	defer os.RemoveAll(staging) // after success it is gone already

	p.Phase("metadata", 1, 0)
	db := filepath.Join(staging, DBFile)
	if err := loc.fetch(ctx, DBFile, db); err != nil {
		return res, fmt.Errorf("restore: metadata snapshot: %w", err)
	}
	info, err := metadata.ReadSnapshot(ctx, db)
	if err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	if info.SchemaVersion > metadata.SchemaVersion() {
		return res, fmt.Errorf("restore: the backup's schema version %d is newer than this arca's %d: restore with the arca that took it", info.SchemaVersion, metadata.SchemaVersion())
	}
	res.SchemaVersion, res.Blobs, res.Bytes = info.SchemaVersion, len(info.Blobs), info.Bytes
	p.Advance(1, 0)

	store, err := blobstore.NewFS(filepath.Join(staging, BlobsDir))
	if err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	backupBlobs := loc.blobs()
	p.Phase("verify and copy blobs", len(info.Blobs), info.Bytes)
	for _, b := range info.Blobs {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		n, err := copyBlob(ctx, store, b, func() (io.ReadCloser, error) { return backupBlobs.Open(ctx, b.Digest) })
		switch {
		case errors.Is(err, blobstore.ErrNotFound):
			return res, &CorruptError{Digest: b.Digest, Err: errors.New("missing from the backup")}
		case errors.Is(err, blobstore.ErrDigestMismatch), errors.Is(err, blobstore.ErrSizeMismatch), errors.Is(err, blobstore.ErrTooLarge):
			return res, &CorruptError{Digest: b.Digest, Err: err}
		case err != nil:
			return res, fmt.Errorf("restore: blob %s: %w", b.Digest, err)
		}
		res.CopiedBlobs++
		res.CopiedBytes += n
		p.Advance(1, n)
	}
	// An empty dataDir is replaced (rename needs the name free).
	if err := os.Remove(dataDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("restore: %w", err)
	}
	if err := os.Rename(staging, dataDir); err != nil {
		return res, fmt.Errorf("restore: %w", err)
	}
	res.Finished = armtime.Of(time.Now().UTC())
	return res, nil
}

// checkFresh refuses a data directory that holds anything.
func checkFresh(dataDir string) error {
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("restore: data directory %s is not empty: restore only into a new or empty directory", dataDir)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return errors.Join(out.Sync(), out.Close())
}

// DirSource is the state in a data directory, read directly (a server may
// be running on it: the snapshot is consistent all the same).
type DirSource struct {
	db    string
	blobs blobstore.Backend
}

// NewDirSource reads the data directory dataDir.
func NewDirSource(dataDir string) (*DirSource, error) {
	db := filepath.Join(dataDir, DBFile)
	if _, err := os.Stat(db); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dataDir, err)
	}
	blobs, err := blobstore.NewFS(filepath.Join(dataDir, BlobsDir))
	if err != nil {
		return nil, err
	}
	return NewStoreSource(dataDir, blobs)
}

// NewStoreSource reads the metadata in dataDir and the blobs in blobs (a
// server whose blobs are not under its data directory).
func NewStoreSource(dataDir string, blobs blobstore.Backend) (*DirSource, error) {
	db := filepath.Join(dataDir, DBFile)
	if _, err := os.Stat(db); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", dataDir, err)
	}
	return &DirSource{db: db, blobs: blobs}, nil
}

// SnapshotTo writes a consistent snapshot of the metadata to path.
func (s *DirSource) SnapshotTo(ctx context.Context, path string) error {
	return metadata.SnapshotSQLite(ctx, s.db, path)
}

// OpenBlob opens blob d.
func (s *DirSource) OpenBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	return s.blobs.Open(ctx, d)
}
