package content_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
)

// Moving an embedded instance's blobs to another backend: every digest is
// verified, a corrupt source blob is refused by name, and a second run
// copies only what is missing.
func TestCopyBlobs(t *testing.T) {
	backends(t, func(t *testing.T, to blobstore.Backend) {
		ctx := context.Background()
		dir := t.TempDir()
		from, err := blobstore.NewFS(dir)
		if err != nil {
			t.Fatal(err)
		}
		src := &content.Store{Blobs: from}
		var ds []digest.Digest
		for _, body := range []string{"one", "two", "three"} {
			d := digest.FromString(body)
			w, err := src.NewWriter(ctx, d, int64(len(body)))
			if err != nil {
				t.Fatal(err)
			}
			w.Write([]byte(body))
			if err := w.Commit(ctx, d, int64(len(body))); err != nil {
				t.Fatal(err)
			}
			ds = append(ds, d)
		}
		// Spoil one source blob on disk.
		bad := ds[1]
		path := filepath.Join(dir, "blobs", "sha256", bad.Encoded()[:2], bad.Encoded())
		if err := os.WriteFile(path, []byte("tw0"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = content.CopyBlobs(ctx, from, to, nil)
		if !errors.Is(err, blobstore.ErrDigestMismatch) || !strings.Contains(err.Error(), bad.String()) {
			t.Fatalf("copy with a corrupt blob: %v; want a digest mismatch naming %s", err, bad)
		}
		if _, err := to.Stat(ctx, bad); !errors.Is(err, blobstore.ErrNotFound) {
			t.Fatalf("corrupt blob visible in the target: %v", err)
		}
		if err := os.WriteFile(path, []byte("two"), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := content.CopyBlobs(ctx, from, to, nil)
		if err != nil || res.Blobs != 3 || res.Bytes != 11 {
			t.Fatalf("copy: %+v, %v", res, err)
		}
		copied := res.CopiedBlobs
		// Resumable: a run after an interruption copies only what is missing.
		if err := to.Delete(ctx, ds[2]); err != nil {
			t.Fatal(err)
		}
		res, err = content.CopyBlobs(ctx, from, to, nil)
		if err != nil || res.CopiedBlobs != 1 || res.CopiedBytes != 5 {
			t.Fatalf("resumed copy: %+v, %v (first run copied %d); want only the missing blob", res, err, copied)
		}
		for _, d := range ds {
			if _, err := to.Stat(ctx, d); err != nil {
				t.Fatalf("%s not in the target: %v", d, err)
			}
		}
	})
}
