package blobstore_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/blobstore/blobtest"
)

func newFS(t *testing.T) blobstore.Backend {
	s, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestFSConformance(t *testing.T) { blobtest.Run(t, newFS) }

// The pull-through cache follows a fetch through the staged file, and
// followers that lag read it after the commit renamed it.
func TestFSStagedReaderSurvivesCommit(t *testing.T) {
	ctx := context.Background()
	s := newFS(t)
	id := blobstore.NewID()
	p, err := s.Stage(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	r, err := p.(blobstore.StagedReadable).StagedReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	body := []byte("followed while written")
	if _, err := p.Write(body[:5]); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 5)
	if _, err := r.ReadAt(got, 0); err != nil || !bytes.Equal(got, body[:5]) {
		t.Fatalf("ReadAt while writing: %q, %v", got, err)
	}
	if _, err := p.Write(body[5:]); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Commit(ctx, digest.FromBytes(body), []string{id}); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(io.NewSectionReader(r, 0, int64(len(body))))
	if err != nil || !bytes.Equal(all, body) {
		t.Fatalf("ReadAt after commit: %q, %v", all, err)
	}
}
