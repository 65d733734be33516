package blobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// FS is a backend on a local (or shared POSIX) filesystem.
//
// Layout under the root directory:
//
//	blobs/<alg>/<first two hex>/<hex>   committed blobs, read-only
//	uploads/<id>                        staged parts
type FS struct {
	root string
}

var (
	_ Backend        = (*FS)(nil)
	_ StagedReadable = (*fsPart)(nil)
)

// NewFS opens (creating if needed) a store rooted at dir.
func NewFS(dir string) (*FS, error) {
	for _, d := range []string{"blobs", "uploads"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("blobstore: %w", err)
		}
	}
	return &FS{root: dir}, nil
}

func (s *FS) blobPath(d digest.Digest) (string, error) {
	if err := d.Validate(); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNotFound, err)
	}
	enc := d.Encoded()
	return filepath.Join(s.root, "blobs", string(d.Algorithm()), enc[:2], enc), nil
}

func (s *FS) partPath(id string) (string, error) {
	if !ValidID(id) {
		return "", ErrInvalidID
	}
	return filepath.Join(s.root, "uploads", id), nil
}

// Stat returns the size of blob d.
func (s *FS) Stat(_ context.Context, d digest.Digest) (int64, error) {
	p, err := s.blobPath(d)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if notExist(err) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("blobstore stat %s: %w", d, err)
	}
	return fi.Size(), nil
}

// Open returns blob d for reading. The value is an *os.File so that
// net/http can send it with sendfile.
func (s *FS) Open(_ context.Context, d digest.Digest) (io.ReadSeekCloser, error) {
	p, err := s.blobPath(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if notExist(err) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore open %s: %w", d, err)
	}
	return f, nil
}

// notExist: the path is missing, or a file stands where a directory of
// it would be (ENOTDIR): either way no blob is there.
func notExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// Delete removes blob d.
func (s *FS) Delete(_ context.Context, d digest.Digest) error {
	p, err := s.blobPath(d)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("blobstore delete %s: %w", d, err)
	}
	return nil
}

// List walks the committed blobs.
func (s *FS) List(ctx context.Context, fn func(d digest.Digest, size int64) error) error {
	root := filepath.Join(s.root, "blobs")
	return filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		alg, rest, _ := cutDir(rel)
		_, enc, _ := cutDir(rest)
		d := digest.NewDigestFromEncoded(digest.Algorithm(alg), enc)
		if d.Validate() != nil {
			return nil // not a blob (a stray file)
		}
		fi, err := e.Info()
		if err != nil {
			return nil // removed meanwhile
		}
		return fn(d, fi.Size())
	})
}

func cutDir(p string) (string, string, bool) {
	for i := 0; i < len(p); i++ {
		if p[i] == filepath.Separator {
			return p[:i], p[i+1:], true
		}
	}
	return p, "", false
}

// ListStaged lists the staged parts (and upload directories of older
// versions, which DeleteStaged removes too).
func (s *FS) ListStaged(ctx context.Context, fn func(id string, modified time.Time) error) error {
	entries, err := os.ReadDir(filepath.Join(s.root, "uploads"))
	if err != nil {
		return fmt.Errorf("blobstore list staged: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		info, err := e.Info()
		if err != nil || !ValidID(e.Name()) {
			continue
		}
		if err := fn(e.Name(), info.ModTime()); err != nil {
			return err
		}
	}
	return nil
}

// DeleteStaged removes staged parts.
func (s *FS) DeleteStaged(_ context.Context, ids ...string) error {
	for _, id := range ids {
		p, err := s.partPath(id)
		if err != nil {
			return err
		}
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("blobstore delete staged: %w", err)
		}
	}
	return nil
}

// Check reports whether the blobs directory is there and readable; it
// writes nothing.
func (s *FS) Check(context.Context) error {
	for _, d := range []string{"blobs", "uploads"} {
		if _, err := os.ReadDir(filepath.Join(s.root, d)); err != nil {
			return fmt.Errorf("blobstore: %w", err)
		}
		if err := syscall.Access(filepath.Join(s.root, d), 2 /* W_OK */); err != nil {
			return fmt.Errorf("blobstore: %s not writable: %w", d, err)
		}
	}
	return nil
}

// fsPart is a staged file.
type fsPart struct {
	f    *os.File
	done bool
}

// Stage creates staged part id.
func (s *FS) Stage(_ context.Context, id string) (Part, error) {
	p, err := s.partPath(id)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("blobstore stage: %w", err)
	}
	return &fsPart{f: f}, nil
}

func (p *fsPart) Write(b []byte) (int, error) { return p.f.Write(b) }

// Close syncs the part: a Commit after it may run on another replica.
func (p *fsPart) Close() error {
	if p.done {
		return nil
	}
	p.done = true
	if err := p.f.Sync(); err != nil {
		p.f.Close()
		return fmt.Errorf("blobstore sync: %w", err)
	}
	if err := p.f.Close(); err != nil {
		return fmt.Errorf("blobstore close: %w", err)
	}
	return nil
}

func (p *fsPart) Abort() error {
	if !p.done {
		p.done = true
		p.f.Close()
	}
	return os.Remove(p.f.Name())
}

// StagedReader opens the part for reading; the descriptor survives the
// rename done by Commit.
func (p *fsPart) StagedReader() (Staged, error) {
	f, err := os.Open(p.f.Name())
	if err != nil {
		return nil, fmt.Errorf("blobstore staged reader: %w", err)
	}
	return f, nil
}

// Commit renames a single part into place, or joins several into a new
// staged file first; either way the blob appears with one rename.
func (s *FS) Commit(ctx context.Context, d digest.Digest, parts []string) error {
	dst, err := s.blobPath(d)
	if err != nil {
		return err
	}
	paths := make([]string, len(parts))
	for i, id := range parts {
		if paths[i], err = s.partPath(id); err != nil {
			return err
		}
	}
	if _, err := os.Stat(dst); err == nil {
		return s.DeleteStaged(ctx, parts...)
	}
	src := ""
	switch len(paths) {
	case 0:
		return fmt.Errorf("blobstore commit %s: no parts", d)
	case 1:
		src = paths[0]
	default:
		if src, err = s.join(paths); err != nil {
			return err
		}
		defer os.Remove(src)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fmt.Errorf("blobstore commit: %w", err)
	}
	if err := os.Rename(src, dst); err != nil {
		if notExist(err) {
			return fmt.Errorf("blobstore commit %s: %w", d, ErrUploadNotFound)
		}
		return fmt.Errorf("blobstore commit: %w", err)
	}
	syncDir(filepath.Dir(dst))
	return s.DeleteStaged(ctx, parts...)
}

// join copies parts into one new synced staged file.
func (s *FS) join(paths []string) (string, error) {
	out, err := os.CreateTemp(filepath.Join(s.root, "uploads"), "join-")
	if err != nil {
		return "", fmt.Errorf("blobstore join: %w", err)
	}
	fail := func(err error) (string, error) {
		out.Close()
		os.Remove(out.Name())
		if notExist(err) {
			err = fmt.Errorf("%w: %v", ErrUploadNotFound, err)
		}
		return "", fmt.Errorf("blobstore join: %w", err)
	}
	for _, p := range paths {
		in, err := os.Open(p)
		if err != nil {
			return fail(err)
		}
		_, err = io.Copy(out, in)
		in.Close()
		if err != nil {
			return fail(err)
		}
	}
	if err := out.Sync(); err != nil {
		return fail(err)
	}
	if err := out.Close(); err != nil {
		return fail(err)
	}
	return out.Name(), nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}
