// Package blobtest is the conformance suite every blobstore.Backend passes:
// run it from the backend's tests with a constructor of empty backends.
package blobtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
)

// Run runs the suite; newBackend returns an empty backend each call.
func Run(t *testing.T, newBackend func(t *testing.T) blobstore.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b blobstore.Backend)
	}{
		{"NotFound", testNotFound},
		{"NothingVisibleBeforeCommit", testInvisibleBeforeCommit},
		{"AbandonedPartNeverVisible", testAbandoned},
		{"PartsJoinInOrder", testPartsInOrder},
		{"LargePartsJoin", testLargeParts},
		{"Range", testRange},
		{"TwoWritersSameDigest", testTwoWriters},
		{"ListAndDelete", testListDelete},
		{"CommitMissingPart", testMissingPart},
		{"InvalidNames", testInvalid},
		{"PurgeStaged", testPurge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newBackend(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// stage writes each of parts into a closed staged part and returns their ids.
func stage(t *testing.T, b blobstore.Backend, parts ...[]byte) []string {
	t.Helper()
	var ids []string
	for _, p := range parts {
		id := blobstore.NewID()
		w, err := b.Stage(ctx(t), id)
		if err != nil {
			t.Fatalf("Stage: %v", err)
		}
		if _, err := w.Write(p); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		ids = append(ids, id)
	}
	return ids
}

func read(t *testing.T, b blobstore.Backend, d digest.Digest) []byte {
	t.Helper()
	r, err := b.Open(ctx(t), d)
	if err != nil {
		t.Fatalf("Open %s: %v", d, err)
	}
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", d, err)
	}
	return got
}

func staged(t *testing.T, b blobstore.Backend) []string {
	t.Helper()
	var ids []string
	if err := b.ListStaged(ctx(t), func(id string, _ time.Time) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		t.Fatalf("ListStaged: %v", err)
	}
	return ids
}

func listed(t *testing.T, b blobstore.Backend) map[digest.Digest]int64 {
	t.Helper()
	m := map[digest.Digest]int64{}
	if err := b.List(ctx(t), func(d digest.Digest, size int64) error {
		m[d] = size
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	return m
}

func testNotFound(t *testing.T, b blobstore.Backend) {
	d := digest.FromString("missing")
	if _, err := b.Stat(ctx(t), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Stat missing: %v, want ErrNotFound", err)
	}
	if _, err := b.Open(ctx(t), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Errorf("Open missing: %v, want ErrNotFound", err)
	}
	if err := b.Delete(ctx(t), d); err != nil {
		t.Errorf("Delete missing: %v, want nil", err)
	}
	if err := b.DeleteStaged(ctx(t), blobstore.NewID()); err != nil {
		t.Errorf("DeleteStaged missing: %v, want nil", err)
	}
	if err := b.Check(ctx(t)); err != nil {
		t.Errorf("Check: %v", err)
	}
}

func testInvisibleBeforeCommit(t *testing.T, b blobstore.Backend) {
	body := []byte("hello, content")
	d := digest.FromBytes(body)
	ids := stage(t, b, body)
	if _, err := b.Stat(ctx(t), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat of a staged, uncommitted blob: %v, want ErrNotFound", err)
	}
	if m := listed(t, b); len(m) != 0 {
		t.Fatalf("List before commit: %v", m)
	}
	if err := b.Commit(ctx(t), d, ids); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if size, err := b.Stat(ctx(t), d); err != nil || size != int64(len(body)) {
		t.Fatalf("Stat after commit: %d, %v", size, err)
	}
	if got := read(t, b, d); !bytes.Equal(got, body) {
		t.Fatalf("read %q, want %q", got, body)
	}
	if left := staged(t, b); len(left) != 0 {
		t.Fatalf("staged parts left after commit: %v", left)
	}
}

func testAbandoned(t *testing.T, b blobstore.Backend) {
	body := random(t, 100<<10)
	d := digest.FromBytes(body)
	id := blobstore.NewID()
	w, err := b.Stage(ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	// A crash here: no Close, no Commit.
	if _, err := b.Stat(ctx(t), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat of an abandoned part: %v, want ErrNotFound", err)
	}
	if err := w.Abort(); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if left := staged(t, b); len(left) != 0 {
		t.Fatalf("aborted part still staged: %v", left)
	}
	if err := b.Commit(ctx(t), d, []string{id}); err == nil {
		t.Fatal("Commit of an aborted part succeeded")
	}
	if _, err := b.Stat(ctx(t), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat after failed commit: %v, want ErrNotFound", err)
	}
}

func testPartsInOrder(t *testing.T, b blobstore.Backend) {
	parts := [][]byte{[]byte("first-"), []byte("second-"), {}, []byte("third")}
	body := bytes.Join(parts, nil)
	d := digest.FromBytes(body)
	if err := b.Commit(ctx(t), d, stage(t, b, parts...)); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got := read(t, b, d); !bytes.Equal(got, body) {
		t.Fatalf("read %q, want %q", got, body)
	}
	if left := staged(t, b); len(left) != 0 {
		t.Fatalf("staged parts left after commit: %v", left)
	}
}

// testLargeParts crosses multipart boundaries: parts big enough for S3 to
// join server-side, and one larger than a multipart part.
func testLargeParts(t *testing.T, b blobstore.Backend) {
	parts := [][]byte{random(t, 6<<20), random(t, 9<<20), random(t, 1000)}
	body := bytes.Join(parts, nil)
	d := digest.FromBytes(body)
	if err := b.Commit(ctx(t), d, stage(t, b, parts...)); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if got := read(t, b, d); !bytes.Equal(got, body) {
		t.Fatalf("read %d bytes (digest %s), want %d", len(got), digest.FromBytes(got), len(body))
	}
}

func testRange(t *testing.T, b blobstore.Backend) {
	body := random(t, 300<<10)
	d := digest.FromBytes(body)
	if err := b.Commit(ctx(t), d, stage(t, b, body)); err != nil {
		t.Fatal(err)
	}
	r, err := b.Open(ctx(t), d)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, rg := range []struct{ off, n int64 }{{1000, 5000}, {0, 10}, {int64(len(body)) - 7, 7}, {200 << 10, 1}} {
		if _, err := r.Seek(rg.off, io.SeekStart); err != nil {
			t.Fatalf("Seek %d: %v", rg.off, err)
		}
		got := make([]byte, rg.n)
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("read %d@%d: %v", rg.n, rg.off, err)
		}
		if !bytes.Equal(got, body[rg.off:rg.off+rg.n]) {
			t.Fatalf("range %d@%d differs", rg.n, rg.off)
		}
	}
	if end, err := r.Seek(0, io.SeekEnd); err != nil || end != int64(len(body)) {
		t.Fatalf("Seek end: %d, %v; want %d", end, err, len(body))
	}
	if n, err := r.Read(make([]byte, 10)); n != 0 || err != io.EOF {
		t.Fatalf("Read at the end: %d, %v; want 0, EOF", n, err)
	}
	// Past the end: the seek or the read fails, and no byte comes back.
	if _, err := r.Seek(int64(len(body))+10, io.SeekStart); err == nil {
		if n, err := r.Read(make([]byte, 10)); n != 0 || err == nil {
			t.Fatalf("Read past the end: %d, %v; want 0 and an error", n, err)
		}
	}
}

func testTwoWriters(t *testing.T, b blobstore.Backend) {
	body := random(t, 1<<20)
	d := digest.FromBytes(body)
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := stage(t, b, body[:1000], body[1000:])
			errs[i] = b.Commit(ctx(t), d, ids)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if got := read(t, b, d); !bytes.Equal(got, body) {
		t.Fatal("content differs after two commits")
	}
	if left := staged(t, b); len(left) != 0 {
		t.Fatalf("staged parts left: %v", left)
	}
}

func testListDelete(t *testing.T, b blobstore.Backend) {
	want := map[digest.Digest]int64{}
	for _, body := range [][]byte{[]byte("a"), []byte("bb"), random(t, 4096), {}} {
		d := digest.FromBytes(body)
		if err := b.Commit(ctx(t), d, stage(t, b, body)); err != nil {
			t.Fatal(err)
		}
		want[d] = int64(len(body))
	}
	sha512 := digest.SHA512.FromBytes([]byte("a"))
	if err := b.Commit(ctx(t), sha512, stage(t, b, []byte("a"))); err != nil {
		t.Fatal(err)
	}
	want[sha512] = 1
	got := listed(t, b)
	if len(got) != len(want) {
		t.Fatalf("List: %v, want %v", got, want)
	}
	for d, size := range want {
		if got[d] != size {
			t.Errorf("List %s: size %d, want %d", d, got[d], size)
		}
	}
	var ds []digest.Digest
	for d := range want {
		ds = append(ds, d)
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	if err := b.Delete(ctx(t), ds[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(ctx(t), ds[0]); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat after Delete: %v", err)
	}
	if got := listed(t, b); len(got) != len(want)-1 {
		t.Fatalf("List after Delete: %d blobs, want %d", len(got), len(want)-1)
	}
}

func testMissingPart(t *testing.T, b blobstore.Backend) {
	ids := stage(t, b, []byte("kept"))
	d := digest.FromString("kept" + "lost")
	err := b.Commit(ctx(t), d, append(ids, blobstore.NewID()))
	if !errors.Is(err, blobstore.ErrUploadNotFound) {
		t.Fatalf("Commit with a missing part: %v, want ErrUploadNotFound", err)
	}
	if _, err := b.Stat(ctx(t), d); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Stat after failed commit: %v", err)
	}
}

func testInvalid(t *testing.T, b blobstore.Backend) {
	for _, id := range []string{"../../etc", "a/b/c/d/e", "short", ""} {
		if _, err := b.Stage(ctx(t), id); !errors.Is(err, blobstore.ErrInvalidID) {
			t.Errorf("Stage(%q): %v, want ErrInvalidID", id, err)
		}
	}
	for _, d := range []digest.Digest{"sha256:../../x", "nope", ""} {
		if _, err := b.Stat(ctx(t), d); !errors.Is(err, blobstore.ErrNotFound) {
			t.Errorf("Stat(%q): %v, want ErrNotFound", d, err)
		}
	}
}

func testPurge(t *testing.T, b blobstore.Backend) {
	stage(t, b, []byte("abandoned"))
	n, err := blobstore.PurgeStaged(ctx(t), b, time.Hour)
	if err != nil || n != 0 {
		t.Fatalf("PurgeStaged(1h) of a fresh part: %d, %v; want 0", n, err)
	}
	time.Sleep(1100 * time.Millisecond) // object stores keep whole seconds
	n, err = blobstore.PurgeStaged(ctx(t), b, time.Second)
	if err != nil || n != 1 {
		t.Fatalf("PurgeStaged(1s): %d, %v; want 1", n, err)
	}
	if left := staged(t, b); len(left) != 0 {
		t.Fatalf("staged after purge: %v", left)
	}
}
