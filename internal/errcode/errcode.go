// Package errcode is the one table of OCI distribution error codes and the
// one writer of the spec's JSON error body. Handlers return errors; Write
// picks the status and body, so no handler types a code by hand.
package errcode

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Code is a registry error code with its default message and HTTP status.
type Code struct {
	Value   string
	Message string
	Status  int
}

// The codes of the OCI distribution spec (v1.1), plus the few registries add.
var (
	BlobUnknown         = Code{"BLOB_UNKNOWN", "blob unknown to registry", http.StatusNotFound}
	BlobUploadInvalid   = Code{"BLOB_UPLOAD_INVALID", "blob upload invalid", http.StatusBadRequest}
	BlobUploadUnknown   = Code{"BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", http.StatusNotFound}
	DigestInvalid       = Code{"DIGEST_INVALID", "provided digest did not match uploaded content", http.StatusBadRequest}
	ManifestBlobUnknown = Code{"MANIFEST_BLOB_UNKNOWN", "manifest references a manifest or blob unknown to registry", http.StatusBadRequest}
	ManifestInvalid     = Code{"MANIFEST_INVALID", "manifest invalid", http.StatusBadRequest}
	ManifestUnknown     = Code{"MANIFEST_UNKNOWN", "manifest unknown to registry", http.StatusNotFound}
	NameInvalid         = Code{"NAME_INVALID", "invalid repository name", http.StatusBadRequest}
	NameUnknown         = Code{"NAME_UNKNOWN", "repository name not known to registry", http.StatusNotFound}
	TagInvalid          = Code{"TAG_INVALID", "manifest tag is invalid", http.StatusBadRequest}
	SizeInvalid         = Code{"SIZE_INVALID", "provided length did not match content length", http.StatusBadRequest}
	Unauthorized        = Code{"UNAUTHORIZED", "authentication required", http.StatusUnauthorized}
	Denied              = Code{"DENIED", "requested access to the resource is denied", http.StatusForbidden}
	Unsupported         = Code{"UNSUPPORTED", "the operation is unsupported", http.StatusMethodNotAllowed}
	TooManyRequests     = Code{"TOOMANYREQUESTS", "too many requests", http.StatusTooManyRequests}
	RangeInvalid        = Code{"RANGE_INVALID", "invalid content range", http.StatusRequestedRangeNotSatisfiable}
	ManifestTooLarge    = Code{"MANIFEST_INVALID", "manifest too large", http.StatusRequestEntityTooLarge}
	Unavailable         = Code{"UNAVAILABLE", "service unavailable", http.StatusServiceUnavailable}
	// FailedDependency is what ACR answers when the upstream of a cache rule fails.
	FailedDependency = Code{"UNKNOWN", "upstream request failed", http.StatusFailedDependency}
	Unknown          = Code{"UNKNOWN", "unknown error", http.StatusInternalServerError}
)

// Error is a registry error: a code, a specific message and optional detail.
type Error struct {
	Code    Code
	Message string
	Detail  any
	// Status overrides Code.Status when non-zero (e.g. an upstream 404 kept as 404).
	Status int
	// Cause is the underlying error (an upstream's answer), for callers
	// that look at it with errors.As; it is never shown to clients.
	Cause error
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Cause }

func (e *Error) Error() string {
	if e.Message != "" {
		return e.Code.Value + ": " + e.Message
	}
	return e.Code.Value + ": " + e.Code.Message
}

// New returns an error with code c and message msg (the code's default when empty).
func New(c Code, msg string) *Error { return &Error{Code: c, Message: msg} }

// WithDetail returns an error carrying a detail object.
func (c Code) WithDetail(msg string, detail any) *Error {
	return &Error{Code: c, Message: msg, Detail: detail}
}

// Err returns the code as an error with its default message.
func (c Code) Err() *Error { return &Error{Code: c} }

type body struct {
	Errors []item `json:"errors"`
}

type item struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// Status returns the HTTP status err would be written with.
func Status(err error) int {
	var e *Error
	if errors.As(err, &e) {
		if e.Status != 0 {
			return e.Status
		}
		return e.Code.Status
	}
	return http.StatusInternalServerError
}

// Write sends err as the spec's JSON error body. Errors that are not *Error
// become UNKNOWN with a generic message: internal details stay in the logs.
func Write(w http.ResponseWriter, r *http.Request, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = Unknown.Err()
	}
	msg := e.Message
	if msg == "" {
		msg = e.Code.Message
	}
	status := Status(e)
	b, err := json.Marshal(body{Errors: []item{{Code: e.Code.Value, Message: msg, Detail: e.Detail}}})
	if err != nil { // a Detail that does not marshal: drop it
		b, _ = json.Marshal(body{Errors: []item{{Code: e.Code.Value, Message: msg}}})
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	// HEAD answers carry the length a GET's body would have, as for
	// successful answers.
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.Header().Del("Docker-Content-Digest")
	w.WriteHeader(status)
	if r != nil && r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

// WithStatus overrides the HTTP status of e.
func (e *Error) WithStatus(status int) *Error { e.Status = status; return e }
