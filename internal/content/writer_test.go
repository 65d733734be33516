package content_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/testutil/minio"
)

// backends runs fn against the filesystem and S3 (MinIO) backends.
func backends(t *testing.T, fn func(t *testing.T, b blobstore.Backend)) {
	t.Run("fs", func(t *testing.T) {
		b, err := blobstore.NewFS(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		fn(t, b)
	})
	t.Run("s3", func(t *testing.T) {
		srv := minio.Start(t)
		for _, kv := range srv.Env() {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		ctx := context.Background()
		bucket, err := srv.NewBucket(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := blobstore.ParseS3URL(srv.BlobsURL(bucket, "p"))
		if err != nil {
			t.Fatal(err)
		}
		b, err := blobstore.NewS3(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		fn(t, b)
	})
}

func newMeta(t *testing.T) metadata.Store {
	m, err := metadata.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "arca.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func stagedParts(t *testing.T, b blobstore.Backend) int {
	n := 0
	if err := b.ListStaged(context.Background(), func(string, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWriterVerifies(t *testing.T) {
	backends(t, func(t *testing.T, b blobstore.Backend) {
		ctx := context.Background()
		s := &content.Store{Blobs: b}
		body := []byte("the real content")
		d := digest.FromBytes(body)
		tests := []struct {
			name     string
			expected digest.Digest
			size     int64
			commitD  digest.Digest
			commitN  int64
			wantErr  error
		}{
			{"wrong digest", "", -1, digest.FromString("other"), -1, blobstore.ErrDigestMismatch},
			{"wrong size", "", -1, d, 3, blobstore.ErrSizeMismatch},
			{"more than announced", d, 4, d, 4, blobstore.ErrTooLarge},
			{"unhashed algorithm", digest.SHA512.FromBytes(body), -1, d, -1, blobstore.ErrDigestMismatch},
			{"invalid digest", "", -1, "sha256:nothex", -1, blobstore.ErrDigestMismatch},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				w, err := s.NewWriter(ctx, tc.expected, tc.size)
				if err != nil {
					t.Fatal(err)
				}
				_, werr := w.Write(body)
				err = w.Commit(ctx, tc.commitD, tc.commitN)
				if !errors.Is(err, tc.wantErr) && !errors.Is(werr, tc.wantErr) {
					t.Fatalf("write %v, commit %v; want %v", werr, err, tc.wantErr)
				}
				if _, err := b.Stat(ctx, tc.commitD); !errors.Is(err, blobstore.ErrNotFound) {
					t.Fatalf("refused content is visible: %v", err)
				}
				if n := stagedParts(t, b); n != 0 {
					t.Fatalf("%d staged parts left", n)
				}
			})
		}
		for _, alg := range []digest.Algorithm{digest.SHA256, digest.SHA512} {
			w, err := s.NewWriter(ctx, "", -1)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(body); err != nil {
				t.Fatal(err)
			}
			if err := w.Commit(ctx, alg.FromBytes(body), int64(len(body))); err != nil {
				t.Fatalf("%s: %v", alg, err)
			}
		}
	})
}

func TestMaxBlobSize(t *testing.T) {
	b, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &content.Store{Blobs: b, MaxBlobSize: 10}
	w, err := s.NewWriter(context.Background(), "", -1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 11)); !errors.Is(err, blobstore.ErrTooLarge) {
		t.Fatalf("11 bytes past a 10-byte limit: %v", err)
	}
	w.Cancel()
}

// A session's chunks land on different replicas (separate Stores over the
// same backend and metadata): progress and hash state live in the
// session's row, so each continues where the last left off, and of two
// writers of the same offset one wins.
func TestUploadAcrossReplicas(t *testing.T) {
	backends(t, func(t *testing.T, b blobstore.Backend) {
		ctx := context.Background()
		meta := newMeta(t)
		replica := func() *content.Store { return &content.Store{Blobs: b, Index: meta, Uploads: meta} }
		id := blobstore.NewID()
		if err := meta.CreateUpload(ctx, "reg", "repo", id); err != nil {
			t.Fatal(err)
		}
		chunks := [][]byte{bytes.Repeat([]byte("a"), 6<<20), []byte("second chunk"), []byte("third")}
		for i, c := range chunks[:2] {
			w, err := replica().ResumeUpload(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(c); err != nil {
				t.Fatal(err)
			}
			if err := w.Save(ctx); err != nil {
				t.Fatalf("chunk %d: %v", i, err)
			}
		}
		// Two writers continue from the same offset: one wins.
		w1, err := replica().ResumeUpload(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		w2, err := replica().ResumeUpload(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		w1.Write(chunks[2])
		w2.Write([]byte("loser"))
		if err := w1.Save(ctx); err != nil {
			t.Fatal(err)
		}
		if err := w2.Save(ctx); !errors.Is(err, blobstore.ErrUploadBusy) {
			t.Fatalf("second writer of the same offset: %v, want ErrUploadBusy", err)
		}
		body := bytes.Join(chunks, nil)
		if size, err := replica().UploadSize(ctx, id); err != nil || size != int64(len(body)) {
			t.Fatalf("UploadSize %d, %v; want %d", size, err, len(body))
		}
		for _, d := range []digest.Digest{digest.FromBytes(body), digest.SHA512.FromBytes(body)} {
			w, err := replica().ResumeUpload(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Verify(ctx, d, int64(len(body))); err != nil {
				t.Fatalf("verify %s: %v", d.Algorithm(), err)
			}
			w.Cancel()
		}
		w, err := replica().ResumeUpload(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		d := digest.FromBytes(body)
		if err := replica().CommitBlob(ctx, w, "reg", "repo", d, int64(len(body))); err != nil {
			t.Fatal(err)
		}
		r, err := b.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		var got bytes.Buffer
		if _, err := got.ReadFrom(r); err != nil || !bytes.Equal(got.Bytes(), body) {
			t.Fatalf("committed %d bytes, %v", got.Len(), err)
		}
		if n := stagedParts(t, b); n != 0 {
			t.Fatalf("%d staged parts left after commit", n)
		}
	})
}
