package registry

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"syscall"

	"github.com/arcacache/arca/internal/errcode"
)

// DefaultMaxBlobSize is the default limit of one uploaded blob.
const DefaultMaxBlobSize = 32 << 30

// StatusClientClosedRequest is written (for logs and metrics only: nobody
// reads it) when the client left before its answer: a cancellation, not a
// server error.
const StatusClientClosedRequest = 499

// clientGone reports whether err only means that the client went away
// (its request context ended), and if so records it as such: at debug
// level, with status 499, never as a 5xx.
func (h *Handler) clientGone(w http.ResponseWriter, r *http.Request, err error) bool {
	if r.Context().Err() == nil || !(errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return false
	}
	h.log.Debug("request canceled by the client", "method", r.Method, "path", r.URL.Path, "err", err)
	w.WriteHeader(StatusClientClosedRequest)
	return true
}

// isStorageFull reports whether err is the file system or SQLite out of space.
func isStorageFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) ||
		strings.Contains(err.Error(), "database or disk is full")
}

// errStorageFull is the answer to a write that ran out of space: a 507
// the client can act on (the spec allows DENIED for a refused write).
func errStorageFull(cause error) error {
	e := errcode.New(errcode.Denied, "the registry's storage is full; the write was refused (stored content can still be pulled)").
		WithStatus(http.StatusInsufficientStorage)
	e.Cause = cause
	return e
}

// storageFull answers an out-of-space error (from the blob store or
// SQLite) with errStorageFull, logged as the operator's warning.
func (h *Handler) storageFull(w http.ResponseWriter, r *http.Request, err error) bool {
	if !isStorageFull(err) {
		return false
	}
	h.log.Warn("write refused: storage full", "method", r.Method, "path", r.URL.Path, "err", err)
	errcode.Write(w, r, errStorageFull(err))
	return true
}
