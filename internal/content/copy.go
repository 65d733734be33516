package content

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
)

// CopyResult says what CopyBlobs did.
type CopyResult struct {
	Blobs       int   // blobs in the source
	Bytes       int64 // their bytes
	CopiedBlobs int   // copied this run (the rest were in the target already)
	CopiedBytes int64
}

// CopyBlobs copies every blob of from into to through the verifying ingest:
// a blob whose bytes do not match its digest is refused (the error names
// it) and nothing of it becomes visible. It is resumable: a blob the
// target already holds with the same size is skipped (it was verified when
// it was copied). progress, when not nil, is called after each blob.
func CopyBlobs(ctx context.Context, from, to blobstore.Backend, progress func(d digest.Digest, size int64, copied bool)) (CopyResult, error) {
	var res CopyResult
	dst := &Store{Blobs: to}
	err := from.List(ctx, func(d digest.Digest, size int64) error {
		res.Blobs++
		res.Bytes += size
		copied, err := copyBlob(ctx, from, dst, d, size)
		if err != nil {
			return fmt.Errorf("blob %s: %w", d, err)
		}
		if copied {
			res.CopiedBlobs++
			res.CopiedBytes += size
		}
		if progress != nil {
			progress(d, size, copied)
		}
		return nil
	})
	return res, err
}

func copyBlob(ctx context.Context, from blobstore.Backend, dst *Store, d digest.Digest, size int64) (bool, error) {
	if have, err := dst.Blobs.Stat(ctx, d); err == nil && have == size {
		return false, nil
	} else if err != nil && !errors.Is(err, blobstore.ErrNotFound) {
		return false, err
	}
	r, err := from.Open(ctx, d)
	if err != nil {
		return false, err
	}
	defer r.Close()
	w, err := dst.NewWriter(ctx, d, size)
	if err != nil {
		return false, err
	}
	if _, err := w.ReadFrom(r); err != nil {
		w.Cancel()
		return false, err
	}
	return true, w.Commit(ctx, d, size)
}
