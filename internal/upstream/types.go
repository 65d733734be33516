// Package upstream is arca's client for upstream registries: Docker Hub,
// MCR, GHCR, Quay, ECR Public, registry.k8s.io, GCR, other arca servers and
// any OCI registry. It handles host mapping (docker.io is served by
// registry-1.docker.io; single-segment Docker Hub names get "library/"),
// challenge auth (anonymous, basic, bearer tokens cached per scope),
// timeouts, retries with backoff on 5xx and 429 honouring Retry-After,
// redirects to blob storage without leaking our Authorization header, and
// Docker Hub rate-limit headers. It does not verify blob bytes: callers
// stream them into a content.Writer, whose Commit verifies the digest.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/egress"
)

// Credentials returns the username and password to log in with. It is
// called at use time (secrets are resolved late, so rotation just works).
type Credentials func(ctx context.Context) (username, password string, err error)

// Repo names one upstream repository.
type Repo struct {
	// Host is the login server as written in a cache rule: "docker.io",
	// "ghcr.io", "127.0.0.1:5001".
	Host string
	// Path is the repository path on that host: "library/ubuntu".
	Path string
	// Creds is nil for anonymous access.
	Creds Credentials
	// CredKey names the credentials for token caching and rate-limit
	// accounting (a credential set name; "" for anonymous).
	CredKey string
}

func (r Repo) String() string { return r.Host + "/" + r.Path }

// Descriptor is what a HEAD tells about a manifest.
type Descriptor struct {
	MediaType string
	Digest    digest.Digest
	Size      int64
}

// Manifest is a fetched manifest. Digest is computed from Body (and checked
// against the requested digest and the Docker-Content-Digest header).
type Manifest struct {
	Body      []byte
	MediaType string
	Digest    digest.Digest
}

// RateLimit is Docker Hub's view of our pull budget.
type RateLimit struct {
	Limit     int // -1 when only ratelimit-remaining was sent
	Remaining int
	// Window is the ";w=" window of the headers.
	Window     time.Duration
	ObservedAt time.Time
}

// Error is an upstream answer that was not a success.
type Error struct {
	Op         string // "GET manifest", ...
	Repo       string // host/path
	StatusCode int    // 0 when no HTTP answer arrived (network error, timeout)
	Code       string // OCI error code from the body, if any
	Message    string
	RetryAfter time.Duration // how long the answer asked to wait (retryWait)
	Err        error         // underlying transport error, if any
}

func (e *Error) Error() string {
	switch {
	case e.StatusCode == 0 && e.Err != nil:
		return fmt.Sprintf("%s %s: %v", e.Op, e.Repo, e.Err)
	case e.Code != "":
		return fmt.Sprintf("%s %s: upstream answered %d %s: %s", e.Op, e.Repo, e.StatusCode, e.Code, e.Message)
	case e.Message != "":
		return fmt.Sprintf("%s %s: upstream answered %d %s: %s", e.Op, e.Repo, e.StatusCode, http.StatusText(e.StatusCode), e.Message)
	}
	return fmt.Sprintf("%s %s: upstream answered %d %s", e.Op, e.Repo, e.StatusCode, http.StatusText(e.StatusCode))
}

func (e *Error) Unwrap() error { return e.Err }

// Summary says what went wrong in words of ours, fit for a client: the
// upstream's status and OCI code, or the kind of transport failure. The
// upstream's own message and addresses are left out (a redirect may have
// pointed at an internal service); Error has them, for logs.
func (e *Error) Summary() string {
	if e.StatusCode != 0 {
		s := fmt.Sprintf("upstream answered %d %s", e.StatusCode, http.StatusText(e.StatusCode))
		if e.Code != "" {
			s += " (" + e.Code + ")"
		}
		return s
	}
	return transportSummary(e.Err)
}

func transportSummary(err error) string {
	var (
		down *HostDownError
		dns  *net.DNSError
	)
	var creds *CredentialsError
	switch {
	case errors.As(err, &creds):
		return creds.Error()
	case errors.As(err, &down) && down.RateLimited:
		return "upstream asked to wait (429 Too Many Requests); requests are held back until " + down.Until.UTC().Format(time.RFC3339)
	case errors.As(err, &down):
		return "upstream is marked unhealthy after failing (" + down.Reason + "); requests fail fast until " + down.Until.UTC().Format(time.RFC3339) + " or until a probe succeeds"
	case errors.Is(err, errTimeout), errors.Is(err, context.DeadlineExceeded):
		return "upstream did not answer in time"
	case errors.Is(err, errDowngrade):
		return errDowngrade.Error()
	case egress.IsRefused(err):
		return "arca's egress policy refused the connection: " + egress.RefusalRule(err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return "upstream refused the connection"
	case errors.As(err, &dns):
		return "upstream host name could not be resolved"
	case err != nil && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "upstream speaks plain HTTP (arca needs --insecure-upstream for it)"
	case err != nil && permanent(err):
		return "TLS or certificate error talking to the upstream"
	}
	return "network error talking to the upstream"
}

// IsNotFound reports whether err is the upstream saying the thing does not exist.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.StatusCode == http.StatusNotFound
}

// IsUnavailable reports whether err means the upstream could not answer:
// network failure, timeout, 5xx or 429. Cached content may be served instead.
func IsUnavailable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return errors.Is(err, context.DeadlineExceeded)
	}
	return e.StatusCode == 0 || e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
}
