package mgmt

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
)

// BackupSource is the server's own state, for `arca backup` against a
// running server.
type BackupSource interface {
	SnapshotTo(ctx context.Context, path string) error
	OpenBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error)
}

// backup serves /arca/v1/backup/metadata (a consistent snapshot of the
// metadata database) and /arca/v1/backup/blobs/<digest>. The client
// verifies what it gets: these only stream.
func (h *Handler) backup(w http.ResponseWriter, req *request) error {
	r, rest := req.r, req.rest
	if h.opts.Backup == nil {
		msg := "This server does not serve backups."
		if h.opts.NoBackup != "" {
			msg = h.opts.NoBackup
		}
		return errNotFound("InvalidResourceType", msg)
	}
	switch {
	case len(rest) == 1 && rest[0] == "metadata":
		return h.backupMetadata(w, r)
	case len(rest) == 2 && rest[0] == "blobs":
		d, err := digest.Parse(rest[1])
		if err != nil {
			return errBadRequest("InvalidDigest", "Not a digest: "+rest[1])
		}
		rc, err := h.opts.Backup.OpenBlob(r.Context(), d)
		if errors.Is(err, blobstore.ErrNotFound) {
			return errNotFound("BlobNotFound", "Blob "+d.String()+" is not in the blob store.")
		}
		if err != nil {
			return err
		}
		defer rc.Close()
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Docker-Content-Digest", d.String())
		if f, ok := rc.(*os.File); ok {
			if fi, err := f.Stat(); err == nil {
				w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
			}
		}
		_, _ = io.Copy(w, rc)
		return nil
	}
	return errNotFound("InvalidResourceType", "Backup serves metadata and blobs/<digest>.")
}

func (h *Handler) backupMetadata(w http.ResponseWriter, r *http.Request) error {
	dir, err := os.MkdirTemp(h.opts.BackupTempDir, "backup-snapshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "arca.db")
	if err := h.opts.Backup.SnapshotTo(r.Context(), path); err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/vnd.sqlite3")
	w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	_, _ = io.Copy(w, f)
	return nil
}
