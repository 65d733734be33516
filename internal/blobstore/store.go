package blobstore

import (
	"context"
	"io"

	"github.com/opencontainers/go-digest"
)

// Writer stages one blob. It is the only way bytes enter a store: pushes,
// pull-through fetches and sync all write through it, and Commit refuses
// content whose digest or size is not the expected one.
type Writer interface {
	io.Writer
	io.ReaderFrom
	// ID names the staged upload (Resume takes it).
	ID() string
	// Size is how many bytes were staged so far.
	Size() int64
	// StagedReader opens the bytes staged so far for reading while writing
	// goes on (followers of an in-flight fetch read it). It stays readable
	// after Commit.
	StagedReader() (Staged, error)
	// Digest is the sha256 of the bytes staged so far.
	Digest() digest.Digest
	// Verify checks digest (and size when >= 0) without making the blob
	// visible or durable; a following Commit with the same digest does not
	// check again. On a mismatch the staged bytes are discarded.
	Verify(ctx context.Context, expected digest.Digest, size int64) error
	// Commit verifies digest (and size when >= 0) unless Verify did, and
	// makes the blob visible durably. On any failure the staged bytes are
	// discarded.
	Commit(ctx context.Context, expected digest.Digest, size int64) error
	// Close keeps the staged bytes for a later Resume.
	Close() error
	// Cancel discards the staged bytes.
	Cancel() error
}

// Staged reads the bytes of an upload at any offset while it grows.
type Staged interface {
	io.ReaderAt
	io.Closer
}

var _ Writer = (*fsWriter)(nil)
