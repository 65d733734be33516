package upstream

import (
	"context"
	_ "crypto/sha256" // digest algorithms go-digest verifies with
	_ "crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/errcode"

	"github.com/arcacache/arca/internal/tracing"
)

// Options configures a Client.
type Options struct {
	// Insecure lists "host:port" login servers reached over plain HTTP
	// (serve flag --insecure-upstream); all others use HTTPS.
	Insecure []string
	// Transport is the base transport (tests); default a tuned
	// *http.Transport clone.
	Transport http.RoundTripper
	// RootCAs, when set, are the roots the default transport trusts
	// (--upstream-ca adds a private CA to the system's).
	RootCAs *x509.CertPool
	// Dial, when set, replaces the default transport's dialer (an egress
	// allow-list refuses hosts before they are resolved).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// ConnectTimeout bounds a TCP connect and a TLS handshake. Default 5s.
	ConnectTimeout time.Duration
	// HeaderTimeout bounds the wait for response headers of each attempt.
	// Default 15s.
	HeaderTimeout time.Duration
	// IdleTimeout bounds each body Read (a stalled stream); bodies may
	// stream longer. Default 30s.
	IdleTimeout time.Duration
	// Health tunes the host health tracker (see health.go).
	Health HealthOptions
	// MaxRetries is the number of retries after the first attempt on network
	// errors, 408, 429 and 5xx. Default 3; negative means none.
	MaxRetries int
	// RetryBackoff is the first retry's wait, doubling (with jitter) up to
	// 10s. Default 200ms. A Retry-After header overrides it (on a 429
	// without one, the rate limit's reset: see retryWait).
	RetryBackoff time.Duration
	// MaxRetryAfter caps an honoured Retry-After (or rate-limit reset): a
	// longer one is not waited for and the answer (429/503) goes to the
	// caller. Default 60s.
	MaxRetryAfter time.Duration
	// TagPageSize is the n= of tags/list requests. Default 1000.
	TagPageSize int
	UserAgent   string
	Logger      *slog.Logger
	// Registerer receives the metrics arca_upstream_requests_total,
	// arca_upstream_bytes_total, arca_upstream_ratelimit_remaining and
	// arca_upstream_ratelimit_limit. Nil: not registered.
	Registerer prometheus.Registerer
	// OnRateLimit, if set, is called (synchronously, keep it fast) with every
	// rate-limit observation; host is CanonicalHost of the login server.
	OnRateLimit func(credKey, host string, rl RateLimit)
}

// Client talks to upstream registries. It is safe for concurrent use and
// owns the token caches (one per credential key).
type Client struct {
	opts     Options
	insecure map[string]bool
	http     *http.Client
	probe    http.RoundTripper // health probes: metered, no retries
	health   *health
	auths    sync.Map // credKey -> *auth.Client
	limits   *rateLimits
	log      *slog.Logger
}

// New builds a Client.
func New(o Options) (*Client, error) {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.HeaderTimeout <= 0 {
		o.HeaderTimeout = 15 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 30 * time.Second
	}
	if o.MaxRetries == 0 {
		o.MaxRetries = 3
	} else if o.MaxRetries < 0 {
		o.MaxRetries = 0
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = 200 * time.Millisecond
	}
	if o.MaxRetryAfter <= 0 {
		o.MaxRetryAfter = 60 * time.Second
	}
	if o.TagPageSize <= 0 {
		o.TagPageSize = 1000
	}
	if o.UserAgent == "" {
		o.UserAgent = "arca"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Transport == nil {
		// The retry layer's watchdog enforces HeaderTimeout with a clearer
		// error; the transport's own header timeout is only a backstop.
		t := defaultTransport(o.ConnectTimeout, o.HeaderTimeout+5*time.Second, o.Dial)
		if o.RootCAs != nil {
			t.TLSClientConfig = &tls.Config{RootCAs: o.RootCAs, MinVersion: tls.VersionTLS12}
		}
		o.Transport = t
	}
	c := &Client{opts: o, insecure: map[string]bool{}, log: o.Logger}
	for _, h := range o.Insecure {
		if h = strings.ToLower(strings.TrimSpace(h)); h == "" || strings.ContainsAny(h, "/ ") {
			return nil, fmt.Errorf("upstream: invalid insecure host %q (want host:port)", h)
		}
		c.insecure[h] = true
	}
	m, err := newMetrics(o.Registerer)
	if err != nil {
		return nil, fmt.Errorf("upstream: register metrics: %w", err)
	}
	c.limits = &rateLimits{byKey: map[limitKey]RateLimit{}, metrics: m, hook: o.OnRateLimit}
	c.probe = &meterTransport{next: o.Transport, metrics: m, limits: c.limits}
	if c.health, err = newHealth(o.Health, c.probeHost, o.Logger, o.Registerer); err != nil {
		return nil, fmt.Errorf("upstream: register metrics: %w", err)
	}
	rt := &retryTransport{
		next: c.probe, health: c.health,
		maxRetries: o.MaxRetries, headerTimeout: o.HeaderTimeout, idleTimeout: o.IdleTimeout,
		backoff: o.RetryBackoff, maxBackoff: 10 * time.Second, maxRetryAfter: o.MaxRetryAfter,
		log: o.Logger,
	}
	c.http = &http.Client{Transport: rt, CheckRedirect: checkRedirect}
	return c, nil
}

// RateLimit returns the last Docker Hub rate-limit headers seen for
// credKey ("" for anonymous) on host.
func (c *Client) RateLimit(credKey, host string) (RateLimit, bool) {
	return c.limits.get(credKey, host)
}

// reqInfo travels in a request's context down to the credential function
// and the metering transport.
type reqInfo struct {
	upstream     string // CanonicalHost of the login server
	apiHost      string
	credKey      string
	creds        Credentials
	recordLimits bool
}

type infoKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	info, _ := ctx.Value(infoKey{}).(*reqInfo)
	return info
}

// credential resolves the request's credentials at use time, and only for
// the host they belong to (never for a token realm or a redirect target).
func credential(ctx context.Context, hostport string) (auth.Credential, error) {
	info := infoFrom(ctx)
	if info == nil || info.creds == nil || !strings.EqualFold(hostport, info.apiHost) {
		return auth.EmptyCredential, nil
	}
	user, pass, err := info.creds(ctx)
	if err != nil {
		return auth.EmptyCredential, &CredentialsError{Key: info.credKey, Err: err}
	}
	return auth.Credential{Username: user, Password: pass}, nil
}

func (c *Client) newAuthClient(cache auth.Cache) *auth.Client {
	return &auth.Client{
		Client:     c.http,
		Header:     http.Header{"User-Agent": {c.opts.UserAgent}},
		Credential: credential,
		Cache:      cache,
	}
}

// ForgetCredentials drops the cached tokens and logins of every credential
// key starting with prefix, so that the next request resolves its
// credentials again (a credential set was rewritten: other secrets, or
// another identity reading them).
func (c *Client) ForgetCredentials(prefix string) {
	c.auths.Range(func(k, _ any) bool {
		if strings.HasPrefix(k.(string), prefix) {
			c.auths.Delete(k)
		}
		return true
	})
}

// authFor returns the auth client (and so the token cache) of credKey.
func (c *Client) authFor(credKey string) *auth.Client {
	if ac, ok := c.auths.Load(credKey); ok {
		return ac.(*auth.Client)
	}
	ac, _ := c.auths.LoadOrStore(credKey, c.newAuthClient(newTokenCache()))
	return ac.(*auth.Client)
}

// do sends one request for p's repository with pull scope and returns the
// response whatever its status; errors are *Error.
func (c *Client) do(ctx context.Context, op string, p prepared, method string, u *url.URL, accept string) (resp *http.Response, err error) {
	ctx, span := tracing.Start(ctx, "upstream "+method, attribute.String("arca.upstream", p.repo.String()), attribute.String("arca.op", op))
	defer func() {
		if resp != nil {
			span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
		}
		tracing.End(span, err)
	}()
	info := &reqInfo{upstream: CanonicalHost(p.repo.Host), apiHost: p.apiHost, credKey: p.repo.CredKey, creds: p.repo.Creds, recordLimits: true}
	ctx = context.WithValue(ctx, infoKey{}, info)
	// The scope hint lets a cached token go out with the first request
	// instead of after a 401 challenge.
	ctx = auth.AppendScopesForHost(ctx, p.apiHost, auth.ScopeRepository(p.repo.Path, auth.ActionPull))
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, &Error{Op: op, Repo: p.repo.String(), Err: err}
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err = c.authFor(p.repo.CredKey).Do(req)
	if err != nil {
		e := authError(op, p.repo.String(), withHint(err, p.repo.Host))
		var down *HostDownError
		if errors.As(err, &down) && down.RateLimited {
			// Held back by an earlier 429: the caller sees a 429 too.
			e.StatusCode, e.RetryAfter = http.StatusTooManyRequests, time.Until(down.Until)
		}
		return nil, e
	}
	return resp, nil
}

// withHint adds the fix to the one transport error whose fix is a flag.
func withHint(err error, host string) error {
	if strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return fmt.Errorf("%w (for a plain-HTTP upstream, start arca with --insecure-upstream %s)", err, host)
	}
	return err
}

// authError turns what the auth client returns into an *Error.
func authError(op, repo string, err error) *Error {
	e := &Error{Op: op, Repo: repo, Err: err}
	var er *errcode.ErrorResponse
	switch {
	case errors.As(err, &er): // the token service said no
		e.StatusCode = er.StatusCode
		var detail string
		if len(er.Errors) > 0 {
			e.Code, detail = oneLine(er.Errors[0].Code, 64), ": "+oneLine(er.Errors[0].Message, maxErrorMessage)
		}
		host := ""
		if er.URL != nil {
			host = er.URL.Host
		}
		if e.StatusCode == http.StatusUnauthorized {
			if e.Code == "" {
				e.Code = "UNAUTHORIZED"
			}
			e.Message = fmt.Sprintf("token service %s rejected the credentials%s", host, detail)
		} else {
			e.Message = fmt.Sprintf("token service %s answered %d %s%s", host, er.StatusCode, http.StatusText(er.StatusCode), detail)
		}
	case errors.Is(err, auth.ErrBasicCredentialNotFound):
		e.StatusCode, e.Code = http.StatusUnauthorized, "UNAUTHORIZED"
		e.Message = "the registry requires credentials (basic auth) and none are configured"
	}
	return e
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// statusError reads (boundedly) and closes a non-success answer.
func statusError(op, repo string, resp *http.Response) *Error {
	defer resp.Body.Close()
	e := &Error{Op: op, Repo: repo, StatusCode: resp.StatusCode}
	if ra, ok := retryWait(resp.StatusCode, resp.Header, time.Now()); ok {
		e.RetryAfter = ra
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if len(body) > 0 {
		e.Code, e.Message = parseErrorBody(body)
	}
	if e.StatusCode == http.StatusUnauthorized && e.Code == "" {
		e.Code = "UNAUTHORIZED"
	}
	return e
}

// readError wraps a failure while reading a body: no HTTP answer for the
// caller, so it counts as unavailable.
func readError(op, repo string, err error) *Error {
	return &Error{Op: op, Repo: repo, Err: fmt.Errorf("reading response: %w", err)}
}
