package content

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
)

// Writer is the one verifying ingest: every byte that becomes a blob passes
// it. It hashes what it stages (sha256 and sha512, or only the algorithm
// of the digest known in advance), refuses more bytes than allowed, and
// asks the backend to commit only bytes whose digest and size it checked.
// A backend only stores them.
//
// An upload session's progress (its staged parts and hash states) is kept
// in the session's metadata row, not beside the bytes, so the next chunk
// may land on any replica; Save records a chunk only if the session still
// holds the bytes the chunk started from, so of two requests writing one
// session one wins and the other's chunk is discarded.
type Writer struct {
	store  *Store
	part   blobstore.Part
	partID string
	parts  []string // earlier parts of the session, closed
	h256   hash.Hash
	h512   hash.Hash
	size   int64 // bytes staged, earlier parts included
	base   int64 // bytes staged when this writer started
	limit  int64 // < 0: none
	upload string
	// broken: a write failed after its bytes were hashed (or went past the
	// limit), so the hashes no longer describe the staged bytes.
	broken   error
	verified digest.Digest
	done     bool
}

// uploadState is what a session's row keeps between requests.
type uploadState struct {
	Parts  []string `json:"parts"`
	SHA256 []byte   `json:"sha256"`
	SHA512 []byte   `json:"sha512"`
}

// NewWriter starts staging a blob. expected (when not "") and size (when
// >= 0) are what the caller will commit, if known now: only expected's
// algorithm is hashed, and no byte past size is accepted.
func (s *Store) NewWriter(ctx context.Context, expected digest.Digest, size int64) (*Writer, error) {
	w := &Writer{store: s, limit: s.limit(size)}
	alg, _, _ := strings.Cut(string(expected), ":")
	switch digest.Algorithm(alg) {
	case digest.SHA256:
		w.h256 = sha256.New()
	case digest.SHA512:
		w.h512 = sha512.New()
	default:
		w.h256, w.h512 = sha256.New(), sha512.New()
	}
	if err := w.stage(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

func (s *Store) limit(size int64) int64 {
	switch {
	case size >= 0 && (s.MaxBlobSize <= 0 || size < s.MaxBlobSize):
		return size
	case s.MaxBlobSize > 0:
		return s.MaxBlobSize
	}
	return -1
}

func (w *Writer) stage(ctx context.Context) error {
	w.partID = blobstore.NewID()
	p, err := w.store.Blobs.Stage(ctx, w.partID)
	if err != nil {
		return fmt.Errorf("stage blob: %w", err)
	}
	w.part = p
	return nil
}

// ResumeUpload continues upload session id from the state its row keeps
// (blobstore.ErrUploadNotFound when there is no such session).
func (s *Store) ResumeUpload(ctx context.Context, id string) (*Writer, error) {
	size, raw, err := s.Uploads.LoadUploadState(ctx, id)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, blobstore.ErrUploadNotFound
	}
	if err != nil {
		return nil, err
	}
	w := &Writer{store: s, limit: s.limit(-1), size: size, base: size, upload: id, h256: sha256.New(), h512: sha512.New()}
	if raw != nil {
		var st uploadState
		if err := json.Unmarshal(raw, &st); err != nil {
			return nil, fmt.Errorf("upload %s state: %w", id, err)
		}
		if err := unmarshalHash(w.h256, st.SHA256); err != nil {
			return nil, fmt.Errorf("upload %s state: %w", id, err)
		}
		if err := unmarshalHash(w.h512, st.SHA512); err != nil {
			return nil, fmt.Errorf("upload %s state: %w", id, err)
		}
		w.parts = st.Parts
	}
	if err := w.stage(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

func unmarshalHash(h hash.Hash, b []byte) error {
	u, ok := h.(encoding.BinaryUnmarshaler)
	if !ok {
		return errors.New("hash state cannot be restored")
	}
	return u.UnmarshalBinary(b)
}

func marshalHash(h hash.Hash) ([]byte, error) {
	m, ok := h.(encoding.BinaryMarshaler)
	if !ok {
		return nil, errors.New("hash state cannot be saved")
	}
	return m.MarshalBinary()
}

// Size is how many bytes are staged, earlier chunks of a session included.
func (w *Writer) Size() int64 { return w.size }

// Base is how many bytes the session held when this writer started.
func (w *Writer) Base() int64 { return w.base }

// StagedReader opens the bytes this writer stages for reading while it
// writes (ok false when the backend cannot; see blobstore.StagedReadable).
func (w *Writer) StagedReader() (blobstore.Staged, bool, error) {
	sr, ok := w.part.(blobstore.StagedReadable)
	if !ok || len(w.parts) > 0 {
		return nil, false, nil
	}
	r, err := sr.StagedReader()
	return r, err == nil, err
}

// parallelHashMin is the write size from which hashing runs alongside the
// backend write instead of after it (below it a goroutine costs more than
// it saves).
const parallelHashMin = 64 << 10

func (w *Writer) Write(p []byte) (int, error) {
	if w.broken != nil {
		return 0, w.broken
	}
	if w.done {
		return 0, errors.New("write after commit or cancel")
	}
	if w.limit >= 0 && w.size+int64(len(p)) > w.limit {
		w.broken = fmt.Errorf("%w: more than %d bytes", blobstore.ErrTooLarge, w.limit)
		return 0, w.broken
	}
	var n int
	var err error
	if len(p) < parallelHashMin {
		n, err = w.part.Write(p)
		w.hash(p[:n])
	} else {
		hashed := make(chan struct{})
		go func() {
			w.hash(p)
			close(hashed)
		}()
		n, err = w.part.Write(p)
		<-hashed
		if n < len(p) {
			if err == nil {
				err = io.ErrShortWrite
			}
			w.broken = fmt.Errorf("stage blob: %w", err)
		}
	}
	w.size += int64(n)
	return n, err
}

// hash feeds p to the hashes, both at once when there are two.
func (w *Writer) hash(p []byte) {
	switch {
	case w.h512 == nil:
		w.h256.Write(p)
	case w.h256 == nil:
		w.h512.Write(p)
	default:
		done := make(chan struct{})
		go func() {
			w.h512.Write(p)
			close(done)
		}()
		w.h256.Write(p)
		<-done
	}
}

// ReadFrom copies r in large chunks (bigger than io.Copy's 32 KiB default:
// fewer syscalls and requests on multi-GiB layers).
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
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

// Digest is the sha256 digest of what was staged so far, if hashed.
func (w *Writer) Digest() digest.Digest {
	if w.h256 == nil {
		return ""
	}
	return digest.NewDigest(digest.SHA256, w.h256)
}

// Save closes this writer's chunk and records the session's new progress,
// if the session still holds the bytes this writer started from; else the
// chunk is discarded and Save returns blobstore.ErrUploadBusy.
func (w *Writer) Save(ctx context.Context) error {
	if w.done {
		return errors.New("save after commit or cancel")
	}
	w.done = true
	if w.broken != nil {
		w.part.Abort()
		return w.broken
	}
	parts := w.parts
	if w.size > w.base {
		if err := w.part.Close(); err != nil {
			w.part.Abort()
			return err
		}
		parts = append(parts[:len(parts):len(parts)], w.partID)
	} else {
		w.part.Abort()
	}
	st := uploadState{Parts: parts}
	var err error
	if st.SHA256, err = marshalHash(w.h256); err != nil {
		return err
	}
	if st.SHA512, err = marshalHash(w.h512); err != nil {
		return err
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	err = w.store.Uploads.SaveUploadState(ctx, w.upload, w.base, w.size, raw)
	if err != nil && w.size > w.base {
		_ = w.store.Blobs.DeleteStaged(ctx, w.partID)
	}
	switch {
	case errors.Is(err, metadata.ErrConflict):
		return blobstore.ErrUploadBusy
	case errors.Is(err, metadata.ErrNotFound):
		return blobstore.ErrUploadNotFound
	}
	return err
}

// Cancel discards the bytes this writer staged (a session's earlier
// chunks stay: the session goes on without this one).
func (w *Writer) Cancel() {
	if w.done {
		return
	}
	w.done = true
	w.part.Abort()
}

// Verify checks that the staged bytes have digest expected (and size, when
// size >= 0) without making them visible or durable: a fetch releases the
// bytes to its clients once they verify, and commits afterwards. A
// mismatch discards what was staged.
func (w *Writer) Verify(ctx context.Context, expected digest.Digest, size int64) error {
	if w.done {
		return errors.New("verify after commit or cancel")
	}
	if err := w.verify(expected, size); err != nil {
		w.discard(ctx)
		return err
	}
	w.verified = expected
	return nil
}

func (w *Writer) verify(expected digest.Digest, size int64) error {
	if w.broken != nil {
		return w.broken
	}
	if err := expected.Validate(); err != nil {
		return fmt.Errorf("%w: %v", blobstore.ErrDigestMismatch, err)
	}
	if size >= 0 && size != w.size {
		return fmt.Errorf("%w: staged %d bytes, expected %d", blobstore.ErrSizeMismatch, w.size, size)
	}
	var h hash.Hash
	switch expected.Algorithm() { // valid: checked above
	case digest.SHA256:
		h = w.h256
	case digest.SHA512:
		h = w.h512
	}
	if h == nil {
		return fmt.Errorf("%w: digest algorithm %q not hashed", blobstore.ErrDigestMismatch, expected.Algorithm())
	}
	if got := digest.NewDigest(expected.Algorithm(), h); got != expected {
		return fmt.Errorf("%w: content is %s, expected %s", blobstore.ErrDigestMismatch, got, expected)
	}
	return nil
}

// discard drops everything staged for this blob, earlier parts included:
// they can never commit.
func (w *Writer) discard(ctx context.Context) {
	w.done = true
	w.part.Abort()
	if len(w.parts) > 0 {
		_ = w.store.Blobs.DeleteStaged(ctx, w.parts...)
	}
}

// Commit verifies the staged bytes (unless Verify did for expected), makes
// them durable and then visible as blob expected. On any failure what was
// staged is discarded and nothing becomes visible.
func (w *Writer) Commit(ctx context.Context, expected digest.Digest, size int64) error {
	if w.done {
		return errors.New("commit after commit or cancel")
	}
	if w.verified == "" || w.verified != expected {
		if err := w.verify(expected, size); err != nil {
			w.discard(ctx)
			return err
		}
	}
	parts := w.parts
	if w.size > w.base || len(parts) == 0 {
		if err := w.part.Close(); err != nil {
			w.discard(ctx)
			return err
		}
		parts = append(parts[:len(parts):len(parts)], w.partID)
	} else {
		w.part.Abort()
	}
	w.done = true
	// The row first: garbage collection keeps the bytes about to be
	// committed (and waits out a deletion of the same digest in progress).
	if w.store.Index != nil {
		if err := w.store.Index.PrepareBlob(ctx, expected, w.size); err != nil {
			_ = w.store.Blobs.DeleteStaged(ctx, parts...)
			return err
		}
	}
	if err := w.store.Blobs.Commit(ctx, expected, parts); err != nil {
		_ = w.store.Blobs.DeleteStaged(ctx, parts...)
		return err
	}
	return nil
}

// UploadSize is how many bytes upload session id holds.
func (s *Store) UploadSize(ctx context.Context, id string) (int64, error) {
	size, _, err := s.Uploads.LoadUploadState(ctx, id)
	if errors.Is(err, metadata.ErrNotFound) {
		return 0, blobstore.ErrUploadNotFound
	}
	return size, err
}

// DiscardUpload removes the parts upload session id staged (its row is
// the caller's to delete).
func (s *Store) DiscardUpload(ctx context.Context, id string) error {
	parts, err := s.UploadParts(ctx, id)
	if errors.Is(err, blobstore.ErrUploadNotFound) || len(parts) == 0 {
		return nil
	}
	if err != nil {
		return err
	}
	return s.Blobs.DeleteStaged(ctx, parts...)
}

// UploadParts lists the staged parts upload session id recorded so far.
func (s *Store) UploadParts(ctx context.Context, id string) ([]string, error) {
	_, raw, err := s.Uploads.LoadUploadState(ctx, id)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, blobstore.ErrUploadNotFound
	}
	if err != nil || raw == nil {
		return nil, err
	}
	var st uploadState
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("upload %s state: %w", id, err)
	}
	return st.Parts, nil
}
