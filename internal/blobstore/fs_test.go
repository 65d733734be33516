package blobstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func newFS(t *testing.T) *FS {
	t.Helper()
	s, err := NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func TestCommitVerifies(t *testing.T) {
	ctx := context.Background()
	s := newFS(t)
	b := randBytes(100000)
	d := digest.FromBytes(b)

	w, _ := s.Create(ctx, NewID())
	w.Write(b)
	if err := w.Commit(ctx, digest.FromString("other"), -1); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := s.Stat(ctx, d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("mismatched content became visible: %v", err)
	}
	w, _ = s.Create(ctx, NewID())
	w.Write(b)
	if err := w.Commit(ctx, d, int64(len(b))+1); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("size mismatch: %v", err)
	}
	w, _ = s.Create(ctx, NewID())
	w.Write(b)
	if err := w.Commit(ctx, d, int64(len(b))); err != nil {
		t.Fatal(err)
	}
	if size, err := s.Stat(ctx, d); err != nil || size != int64(len(b)) {
		t.Fatalf("stat: %d %v", size, err)
	}
	f, _ := s.Open(ctx, d)
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, b) {
		t.Fatal("content differs")
	}
	// Staging leaves nothing behind.
	if entries, _ := os.ReadDir(filepath.Join(s.root, "uploads")); len(entries) != 0 {
		t.Fatalf("uploads left: %d", len(entries))
	}
}

func TestSHA512(t *testing.T) {
	ctx := context.Background()
	s := newFS(t)
	b := randBytes(5000)
	d := digest.SHA512.FromBytes(b)
	w, _ := s.Create(ctx, NewID())
	w.Write(b)
	if err := w.Commit(ctx, d, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx, d); err != nil {
		t.Fatal(err)
	}
}

func TestResume(t *testing.T) {
	ctx := context.Background()
	s := newFS(t)
	b := randBytes(300000)
	id := NewID()
	w, _ := s.Create(ctx, id)
	w.Write(b[:100000])
	w.Close()
	w, err := s.Resume(ctx, id)
	if err != nil || w.Size() != 100000 {
		t.Fatalf("resume: %v size %d", err, w.Size())
	}
	w.Write(b[100000:200000])
	w.Close()
	// The state file lags the data (a crash between the two writes): the
	// store must rehash rather than trust it.
	f, _ := os.OpenFile(filepath.Join(s.root, "uploads", id, "data"), os.O_APPEND|os.O_WRONLY, 0)
	f.Write(b[200000:250000])
	f.Close()
	w, err = s.Resume(ctx, id)
	if err != nil || w.Size() != 250000 {
		t.Fatalf("resume after lag: %v %d", err, w.Size())
	}
	w.Write(b[250000:])
	if err := w.Commit(ctx, digest.FromBytes(b), -1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resume(ctx, id); !errors.Is(err, ErrUploadNotFound) {
		t.Fatalf("resume after commit: %v", err)
	}
}

func TestStagedReaderSurvivesCommit(t *testing.T) {
	ctx := context.Background()
	s := newFS(t)
	b := randBytes(4096)
	w, _ := s.Create(ctx, NewID())
	w.Write(b[:1000])
	r, err := w.StagedReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w.Write(b[1000:])
	if err := w.Commit(ctx, digest.FromBytes(b), -1); err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(io.NewSectionReader(r, 0, int64(len(b))+1))
	if !bytes.Equal(got, b) {
		t.Fatalf("staged reader read %d bytes", len(got))
	}
}

func TestInvalidIDsAndDigests(t *testing.T) {
	ctx := context.Background()
	s := newFS(t)
	for _, id := range []string{"../../etc", "a/b", "", "short", "x\x00yyyyyyyy"} {
		if _, err := s.Create(ctx, id); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Create(%q): %v", id, err)
		}
		if _, err := s.Resume(ctx, id); !errors.Is(err, ErrUploadNotFound) {
			t.Errorf("Resume(%q): %v", id, err)
		}
	}
	for _, d := range []digest.Digest{"sha256:../../etc/passwd", "sha256:zz", "md5:abc"} {
		if _, err := s.Stat(ctx, d); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%q): %v", d, err)
		}
	}
}

func TestPurgeUploads(t *testing.T) {
	ctx := context.Background()
	s := newFS(t)
	old, _ := s.Create(ctx, NewID())
	old.Close()
	past := time.Now().Add(-48 * time.Hour)
	age := func(id string) {
		os.Chtimes(filepath.Join(s.root, "uploads", id, "data"), past, past)
		os.Chtimes(filepath.Join(s.root, "uploads", id), past, past)
	}
	age(old.ID())
	fresh, _ := s.Create(ctx, NewID())
	fresh.Close()
	// Created long ago but written to just now: not abandoned.
	busy, _ := s.Create(ctx, NewID())
	busy.Close()
	age(busy.ID())
	os.Chtimes(filepath.Join(s.root, "uploads", busy.ID(), "data"), time.Now(), time.Now())
	// Old, but a request holds it.
	held, _ := s.Create(ctx, NewID())
	held.Close()
	age(held.ID())
	hw, err := s.Resume(ctx, held.ID())
	if err != nil {
		t.Fatal(err)
	}
	defer hw.Close()
	ids, err := s.PurgeUploads(24 * time.Hour)
	if err != nil || len(ids) != 1 || ids[0] != old.ID() {
		t.Fatalf("purged %v, %v; want only %s", ids, err, old.ID())
	}
	for _, id := range []string{fresh.ID(), busy.ID()} {
		if _, err := s.UploadSize(ctx, id); err != nil {
			t.Errorf("upload %s purged: %v", id, err)
		}
	}
}

func TestOneWriterPerUpload(t *testing.T) {
	ctx := context.Background()
	s := newFS(t)
	w, _ := s.Create(ctx, NewID())
	w.Close()
	a, err := s.Resume(ctx, w.ID())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resume(ctx, w.ID()); !errors.Is(err, ErrUploadBusy) {
		t.Fatalf("second writer: %v", err)
	}
	a.Close()
	b, err := s.Resume(ctx, w.ID())
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	b.Cancel()
}
