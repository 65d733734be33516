package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/metadata"
)

// dataDir makes a data directory holding n blobs linked to one repository.
func dataDir(t *testing.T, n int) string {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	meta, err := metadata.OpenSQLite(ctx, filepath.Join(dir, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	defer meta.Close()
	store, err := blobstore.NewFS(filepath.Join(dir, BlobsDir))
	if err != nil {
		t.Fatal(err)
	}
	addBlobs(t, meta, store, 0, n)
	return dir
}

func addBlobs(t *testing.T, meta metadata.Store, store *blobstore.FS, from, to int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < to; i++ {
		b := []byte(fmt.Sprintf("blob %d %s", i, bytes.Repeat([]byte("x"), i)))
		d := digest.FromBytes(b)
		w, err := (&content.Store{Blobs: store}).NewWriter(ctx, d, int64(len(b)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(ctx, d, int64(len(b))); err != nil {
			t.Fatal(err)
		}
		if err := meta.LinkBlob(ctx, "default", "app", d, int64(len(b))); err != nil {
			t.Fatal(err)
		}
	}
}

// cancelAfter cancels the backup's context once n blobs were opened.
type cancelAfter struct {
	Source
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) OpenBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	if c.n--; c.n < 0 {
		c.cancel()
		return nil, ctx.Err()
	}
	return c.Source.OpenBlob(ctx, d)
}

// An interrupted backup keeps the previous snapshot; the next run copies
// only what is missing; restore gets every blob.
func TestBackupInterruptedKeepsPreviousSnapshot(t *testing.T) {
	ctx := context.Background()
	src := dataDir(t, 5)
	ds, err := NewDirSource(src)
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "backup")
	first, err := Backup(ctx, ds, to, nil)
	if err != nil || first.Blobs != 5 || first.CopiedBlobs != 5 {
		t.Fatalf("first backup: %+v, %v", first, err)
	}
	prev, err := os.ReadFile(filepath.Join(to, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{to, filepath.Join(to, DBFile)} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v (%v); the snapshot holds secrets' hashes and signing keys: owner only", p, fi.Mode(), err)
		}
	}

	meta, err := metadata.OpenSQLite(ctx, filepath.Join(src, DBFile))
	if err != nil {
		t.Fatal(err)
	}
	store, _ := blobstore.NewFS(filepath.Join(src, BlobsDir))
	addBlobs(t, meta, store, 5, 10)
	meta.Close()

	cctx, cancel := context.WithCancel(ctx)
	res, err := Backup(cctx, &cancelAfter{Source: ds, n: 2, cancel: cancel}, to, nil)
	if !errors.Is(err, context.Canceled) || res.CopiedBlobs != 2 {
		t.Fatalf("interrupted backup: %+v, %v; want 2 copied and context.Canceled", res, err)
	}
	if now, _ := os.ReadFile(filepath.Join(to, DBFile)); !bytes.Equal(now, prev) {
		t.Error("an interrupted backup replaced the previous snapshot")
	}

	again, err := Backup(ctx, ds, to, nil)
	if err != nil || again.Blobs != 10 || again.CopiedBlobs != 3 {
		t.Fatalf("backup after the interrupt: %+v, %v; want 10 blobs, 3 copied", again, err)
	}
	restored := filepath.Join(t.TempDir(), "data")
	res, err = Restore(ctx, to, restored, nil)
	if err != nil || res.CopiedBlobs != 10 {
		t.Fatalf("restore: %+v, %v", res, err)
	}
	if _, err := os.Stat(filepath.Join(restored, DBFile)); err != nil {
		t.Error(err)
	}
}

// Restore refuses a data directory that holds anything.
func TestRestoreOnlyIntoFreshDir(t *testing.T) {
	ctx := context.Background()
	ds, err := NewDirSource(dataDir(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "backup")
	if _, err := Backup(ctx, ds, to, nil); err != nil {
		t.Fatal(err)
	}
	used := t.TempDir()
	if err := os.WriteFile(filepath.Join(used, "keep"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, to, used, nil); err == nil {
		t.Error("restore into a non-empty directory succeeded")
	}
	if b, _ := os.ReadFile(filepath.Join(used, "keep")); string(b) != "x" {
		t.Error("restore touched a non-empty directory")
	}
	if _, err := Restore(ctx, to, t.TempDir(), nil); err != nil {
		t.Errorf("restore into an empty directory: %v", err)
	}
}
