// Package blobstore keeps content-addressed blobs. A blob becomes visible
// only through Writer.Commit, after its digest was verified and its bytes
// reached the disk; until then it lives in a staging area that a crash or
// a cancel simply abandons.
//
// On-disk layout under the root directory:
//
//	blobs/<alg>/<first two hex>/<hex>   committed blobs, read-only
//	uploads/<id>/data                   bytes staged so far
//	uploads/<id>/state                  resumable hash state for data
package blobstore

import (
	"context"
	"crypto/rand"
	_ "crypto/sha512" // registers sha384/sha512 for go-digest
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
)

// Errors returned by the store.
var (
	ErrNotFound       = errors.New("blob not found")
	ErrUploadNotFound = errors.New("upload not found")
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrSizeMismatch   = errors.New("size mismatch")
	ErrInvalidID      = errors.New("invalid upload id")
	// ErrUploadBusy: another request is writing the same upload.
	ErrUploadBusy = errors.New("upload is being written by another request")
)

// FS is a blob store on a local (or shared POSIX) filesystem.
type FS struct {
	root string
}

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

// Delete removes blob d. Callers make sure nothing references it.
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

var idRe = regexp.MustCompile(`^[a-zA-Z0-9-]{8,64}$`)

// NewID returns a fresh upload id.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:4]) + "-" + hex.EncodeToString(b[4:6]) + "-" + hex.EncodeToString(b[6:8]) + "-" + hex.EncodeToString(b[8:10]) + "-" + hex.EncodeToString(b[10:])
}

// ValidID reports whether id can name an upload (it becomes a path element).
func ValidID(id string) bool { return idRe.MatchString(id) }

func (s *FS) uploadDir(id string) (string, error) {
	if !ValidID(id) {
		return "", ErrInvalidID
	}
	return filepath.Join(s.root, "uploads", id), nil
}

// fsWriter stages a blob in a file. Bytes are hashed as they are written;
// Commit checks the digest, syncs and renames into place. The hash state is
// persisted on Close so that a later request (or another replica) can Resume.
type fsWriter struct {
	store *FS
	id    string
	dir   string
	f     *os.File
	h     hash.Hash
	size  int64
	done  bool
	// broken: a write failed after its bytes were hashed, so the hash no
	// longer describes the file; Verify and Commit refuse.
	broken error
	// verified is the digest Verify accepted (Commit need not rehash).
	verified digest.Digest
}

// Create starts staging a new blob under upload id (see NewID).
func (s *FS) Create(_ context.Context, id string) (Writer, error) {
	dir, err := s.uploadDir(id)
	if err != nil {
		return nil, err
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("blobstore create upload: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("blobstore create upload: %w", err)
	}
	return &fsWriter{store: s, id: id, dir: dir, f: f, h: digest.SHA256.Hash()}, nil
}

// Resume reopens upload id to append to it.
func (s *FS) Resume(_ context.Context, id string) (Writer, error) {
	dir, err := s.uploadDir(id)
	if err != nil {
		return nil, ErrUploadNotFound
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_WRONLY|os.O_APPEND, 0o644)
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrUploadNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("blobstore resume: %w", err)
	}
	// One writer per upload: the lock goes with the descriptor, so Close,
	// Commit and Cancel release it, and so does a crash.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrUploadBusy
		}
		return nil, fmt.Errorf("blobstore resume: lock: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blobstore resume: %w", err)
	}
	w := &fsWriter{store: s, id: id, dir: dir, f: f, size: fi.Size()}
	if h, ok := loadState(filepath.Join(dir, "state"), fi.Size()); ok {
		w.h = h
	} else if w.h, err = hashFile(filepath.Join(dir, "data"), digest.SHA256); err != nil {
		// The state lags the data (a crash between the two writes): rehash.
		f.Close()
		return nil, err
	}
	return w, nil
}

// UploadSize returns how many bytes upload id holds.
func (s *FS) UploadSize(_ context.Context, id string) (int64, error) {
	dir, err := s.uploadDir(id)
	if err != nil {
		return 0, ErrUploadNotFound
	}
	fi, err := os.Stat(filepath.Join(dir, "data"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, ErrUploadNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("blobstore upload size: %w", err)
	}
	return fi.Size(), nil
}

// CancelUpload discards upload id.
func (s *FS) CancelUpload(_ context.Context, id string) error {
	dir, err := s.uploadDir(id)
	if err != nil {
		return ErrUploadNotFound
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return ErrUploadNotFound
	}
	return os.RemoveAll(dir)
}

// PurgeUploads removes staged uploads not written to for age (abandoned
// by clients or by a crash) and returns their ids. An upload a request is
// writing (it holds the lock) is left alone.
func (s *FS) PurgeUploads(age time.Duration) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.root, "uploads"))
	if err != nil {
		return nil, err
	}
	var ids []string
	cutoff := time.Now().Add(-age)
	for _, e := range entries {
		dir := filepath.Join(s.root, "uploads", e.Name())
		if !stagingIdleSince(dir, cutoff) {
			continue
		}
		if os.RemoveAll(dir) == nil {
			ids = append(ids, e.Name())
		}
	}
	return ids, nil
}

// stagingIdleSince reports whether upload dir saw no write after cutoff
// and no writer holds it.
func stagingIdleSince(dir string, cutoff time.Time) bool {
	info, err := os.Stat(dir)
	if err != nil || info.ModTime().After(cutoff) {
		return false
	}
	f, err := os.OpenFile(filepath.Join(dir, "data"), os.O_RDONLY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return true // a crash between mkdir and create
	}
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.ModTime().After(cutoff) {
		return false
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false // being written
	}
	return true
}

// ID is the upload id.
func (w *fsWriter) ID() string { return w.id }

// Size is the number of bytes staged so far.
func (w *fsWriter) Size() int64 { return w.size }

// Path is the staging file.
func (w *fsWriter) Path() string { return filepath.Join(w.dir, "data") }

// StagedReader opens the staging file; the descriptor survives the rename
// done by Commit.
func (w *fsWriter) StagedReader() (Staged, error) {
	f, err := os.Open(w.Path())
	if err != nil {
		return nil, fmt.Errorf("blobstore staged reader: %w", err)
	}
	return f, nil
}

// parallelHashMin is the write size from which hashing runs alongside the
// file write instead of after it (below it a goroutine costs more than it
// saves).
const parallelHashMin = 64 << 10

func (w *fsWriter) Write(p []byte) (int, error) {
	if w.broken != nil {
		return 0, w.broken
	}
	if len(p) < parallelHashMin {
		n, err := w.f.Write(p)
		w.h.Write(p[:n])
		w.size += int64(n)
		return n, err
	}
	hashed := make(chan struct{})
	go func() {
		w.h.Write(p)
		close(hashed)
	}()
	n, err := w.f.Write(p)
	<-hashed
	w.size += int64(n)
	if n < len(p) {
		if err == nil {
			err = io.ErrShortWrite
		}
		w.broken = fmt.Errorf("blobstore write: %w", err)
	}
	return n, err
}

// ReadFrom copies r in large chunks (bigger than io.Copy's 32 KiB default:
// fewer syscalls on multi-GiB layers).
func (w *fsWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, 256<<10)
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			m, werr := w.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Digest is the sha256 digest of what was staged so far.
func (w *fsWriter) Digest() digest.Digest { return digest.NewDigest(digest.SHA256, w.h) }

// Close persists the hash state and closes the file, keeping the upload
// for a later Resume.
func (w *fsWriter) Close() error {
	if w.done {
		return nil
	}
	w.done = true
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("blobstore close upload: %w", err)
	}
	saveState(filepath.Join(w.dir, "state"), w.size, w.h)
	return nil
}

// Cancel discards the upload.
func (w *fsWriter) Cancel() error {
	if !w.done {
		w.done = true
		w.f.Close()
	}
	return os.RemoveAll(w.dir)
}

// Verify checks that the staged bytes have digest expected (and size, when
// size >= 0) without making them visible or durable: a fetch releases the
// bytes to its clients once they verify, and commits afterwards. A
// mismatch discards the upload.
func (w *fsWriter) Verify(_ context.Context, expected digest.Digest, size int64) error {
	if w.done {
		return errors.New("blobstore: verify after close")
	}
	if err := w.verify(expected, size); err != nil {
		w.discard()
		return err
	}
	w.verified = expected
	return nil
}

func (w *fsWriter) verify(expected digest.Digest, size int64) error {
	if w.broken != nil {
		return w.broken
	}
	if err := expected.Validate(); err != nil {
		return fmt.Errorf("%w: %v", ErrDigestMismatch, err)
	}
	if size >= 0 && size != w.size {
		return fmt.Errorf("%w: staged %d bytes, expected %d", ErrSizeMismatch, w.size, size)
	}
	var got digest.Digest
	if expected.Algorithm() == digest.SHA256 {
		got = w.Digest()
	} else {
		h, err := hashFile(w.Path(), expected.Algorithm())
		if err != nil {
			return err
		}
		got = digest.NewDigest(expected.Algorithm(), h)
	}
	if got != expected {
		return fmt.Errorf("%w: content is %s, expected %s", ErrDigestMismatch, got, expected)
	}
	return nil
}

func (w *fsWriter) discard() {
	w.done = true
	w.f.Close()
	os.RemoveAll(w.dir)
}

// Commit verifies that the staged bytes have digest expected (and size, when
// size >= 0), unless Verify already did, then makes the blob visible
// durably. On any failure the upload is discarded and nothing becomes
// visible.
func (w *fsWriter) Commit(_ context.Context, expected digest.Digest, size int64) error {
	if w.done {
		return errors.New("blobstore: commit after close")
	}
	fail := func(err error) error {
		w.discard()
		return err
	}
	if w.verified == "" || w.verified != expected {
		if err := w.verify(expected, size); err != nil {
			return fail(err)
		}
	}
	w.done = true
	if err := w.f.Sync(); err != nil {
		return fail(fmt.Errorf("blobstore sync: %w", err))
	}
	if err := w.f.Close(); err != nil {
		return fail(fmt.Errorf("blobstore close: %w", err))
	}
	dst, _ := w.store.blobPath(expected)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return fail(err)
	}
	if err := os.Rename(w.Path(), dst); err != nil {
		return fail(fmt.Errorf("blobstore commit: %w", err))
	}
	syncDir(filepath.Dir(dst))
	os.RemoveAll(w.dir)
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
}

func hashFile(path string, alg digest.Algorithm) (hash.Hash, error) {
	if !alg.Available() {
		return nil, fmt.Errorf("%w: unsupported algorithm %q", ErrDigestMismatch, alg)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("blobstore rehash: %w", err)
	}
	defer f.Close()
	h := alg.Hash()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("blobstore rehash: %w", err)
	}
	return h, nil
}

// The state file is the staged size (8 bytes) followed by the marshaled
// hash; it is only trusted when the size matches the data file.
func saveState(path string, size int64, h hash.Hash) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return
	}
	b, err := m.MarshalBinary()
	if err != nil {
		return
	}
	buf := binary.BigEndian.AppendUint64(nil, uint64(size))
	tmp := path + ".tmp"
	if os.WriteFile(tmp, append(buf, b...), 0o644) == nil {
		_ = os.Rename(tmp, path)
	}
}

func loadState(path string, size int64) (hash.Hash, bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 8 || int64(binary.BigEndian.Uint64(b)) != size {
		return nil, false
	}
	h := digest.SHA256.Hash()
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok || u.UnmarshalBinary(b[8:]) != nil {
		return nil, false
	}
	return h, true
}
