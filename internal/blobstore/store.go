// Package blobstore keeps content-addressed blobs behind a small backend
// interface. A backend only stores and returns bytes: it verifies nothing.
// Every byte that becomes content passes content.Writer first, which hashes
// it, enforces size limits and checks the digest before it asks the backend
// to commit the staged bytes under that digest.
//
// Bytes are staged as parts (one per request that wrote them); Commit joins
// the parts of one blob, in order, and makes the result visible under its
// digest in one step, so nothing half-written is ever visible and a crash
// before Commit leaves only staged parts, which PurgeStaged removes.
package blobstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"

	"github.com/opencontainers/go-digest"
)

// Errors returned by backends.
var (
	ErrNotFound       = errors.New("blob not found")
	ErrUploadNotFound = errors.New("upload not found")
	ErrDigestMismatch = errors.New("digest mismatch")
	ErrSizeMismatch   = errors.New("size mismatch")
	ErrTooLarge       = errors.New("blob too large")
	ErrInvalidID      = errors.New("invalid upload id")
	// ErrUploadBusy: another request wrote the same upload meanwhile.
	ErrUploadBusy = errors.New("upload is being written by another request")
)

// Backend stores committed blobs and staged parts.
type Backend interface {
	// Stat returns the size of blob d, or ErrNotFound.
	Stat(ctx context.Context, d digest.Digest) (int64, error)
	// Open returns blob d, or ErrNotFound. Ranges are read by seeking
	// (http.ServeContent does); a backend reads only what is asked for.
	Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error)
	// Stage starts a new staged part named id (see NewID), invisible to
	// Stat, Open and List.
	Stage(ctx context.Context, id string) (Part, error)
	// Commit joins the staged parts, in order, into blob d and makes it
	// visible in one step, then removes the parts. If d exists already the
	// parts are removed and Commit succeeds: two writers of the same
	// content both succeed. The caller verified the bytes.
	Commit(ctx context.Context, d digest.Digest, parts []string) error
	// DeleteStaged removes staged parts; missing ones are no error.
	DeleteStaged(ctx context.Context, ids ...string) error
	// Delete removes blob d; a missing blob is no error. Callers make sure
	// nothing references it.
	Delete(ctx context.Context, d digest.Digest) error
	// List calls fn for every committed blob (garbage collection, copies).
	List(ctx context.Context, fn func(d digest.Digest, size int64) error) error
	// ListStaged calls fn for every staged part with its last change.
	ListStaged(ctx context.Context, fn func(id string, modified time.Time) error) error
	// Check reports whether the backend can serve (readiness), without
	// writing where the backend allows it.
	Check(ctx context.Context) error
}

// Part is one staged part being written. Close makes it durable (still
// invisible) so that a Commit, on this replica or another, can take it.
type Part interface {
	io.Writer
	Close() error
	// Abort discards the part.
	Abort() error
}

// StagedReadable is a Part whose bytes can be read while it is being
// written and after it is committed (the filesystem). The pull-through
// cache follows an in-flight fetch through it; for a backend without it
// (S3) the cache spools the bytes locally instead.
type StagedReadable interface {
	StagedReader() (Staged, error)
}

// Staged reads the bytes of a part at any offset while it grows.
type Staged interface {
	io.ReaderAt
	io.Closer
}

// Redirector is a backend that can hand clients a time-limited URL to
// fetch blob d from directly (a presigned S3 GET).
type Redirector interface {
	RedirectURL(ctx context.Context, d digest.Digest, ttl time.Duration) (string, error)
}

var idRe = regexp.MustCompile(`^[a-zA-Z0-9-]{8,64}$`)

// NewID returns a fresh upload or part id.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:4]) + "-" + hex.EncodeToString(b[4:6]) + "-" + hex.EncodeToString(b[6:8]) + "-" + hex.EncodeToString(b[8:10]) + "-" + hex.EncodeToString(b[10:])
}

// ValidID reports whether id can name an upload or a part (it becomes a
// path element or an object key).
func ValidID(id string) bool { return idRe.MatchString(id) }

// PurgeStaged removes staged parts last changed before now-age (abandoned
// by clients or by a crash) and returns how many it removed.
func PurgeStaged(ctx context.Context, b Backend, age time.Duration) (int, error) {
	cutoff := time.Now().Add(-age)
	var old []string
	err := b.ListStaged(ctx, func(id string, modified time.Time) error {
		if modified.Before(cutoff) {
			old = append(old, id)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("list staged parts: %w", err)
	}
	if len(old) == 0 {
		return 0, nil
	}
	if err := b.DeleteStaged(ctx, old...); err != nil {
		return 0, fmt.Errorf("purge staged parts: %w", err)
	}
	return len(old), nil
}
