package cache

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/content"
)

// spool is the local copy of a fetch whose backend cannot read a part
// while it is written (S3, where a part is a multipart upload). The fetch
// writes and hashes the spool at the upstream's pace: followers behind the
// fetch's memory read it, the digest that releases the clients' last byte
// is checked on it, and the upload to the backend follows the fetch like
// any follower, at the backend's pace. So a slow backend delays only when
// the blob becomes durable, not the clients, as on the filesystem. The
// file is unlinked at once: its space is freed when the last reader closes
// it, and a crash leaves nothing behind.
type spool struct {
	*os.File
	digester digest.Digester
	n        int64
	uploaded chan error // the upload's result, once
	err      error
	waited   bool
}

func newSpool(dir string, d digest.Digest) (*spool, error) {
	if !d.Algorithm().Available() {
		return nil, fmt.Errorf("spool fetched blob: digest algorithm %q not available", d.Algorithm())
	}
	f, err := os.CreateTemp(dir, "fetch-")
	if err != nil {
		return nil, fmt.Errorf("spool fetched blob: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool fetched blob: %w", err)
	}
	return &spool{File: f, digester: d.Algorithm().Digester()}, nil
}

// Write spools and hashes p: a follower may read the bytes back as soon
// as the fetch counts them written.
func (s *spool) Write(p []byte) (int, error) {
	n, err := s.File.Write(p)
	s.digester.Hash().Write(p[:n])
	s.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("spool fetched blob: %w", err)
	}
	return n, nil
}

// verify checks the spooled bytes against d (and size, when known).
func (s *spool) verify(d digest.Digest, size int64) error {
	if size >= 0 && s.n != size {
		return fmt.Errorf("fetched %d bytes, expected %d", s.n, size)
	}
	if got := s.digester.Digest(); got != d {
		return fmt.Errorf("fetched content is %s, expected %s", got, d)
	}
	return nil
}

// upload copies the fetch's bytes into w (the verifying ingest, which
// hashes them again on their way to the backend) as a follower of f: from
// memory while it keeps up, from the spool when it falls behind, the last
// byte once the fetch verified. Cancelling ctx stops it; wait returns its
// result, after which w is the caller's again.
func (s *spool) upload(ctx context.Context, f *fetch, w *content.Writer) {
	s.uploaded = make(chan error, 1)
	go func() {
		_, err := io.Copy(w, &follower{f: f, ctx: ctx})
		s.uploaded <- err
	}()
}

func (s *spool) wait() error {
	if !s.waited {
		s.waited, s.err = true, <-s.uploaded
	}
	return s.err
}
