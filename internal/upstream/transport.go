package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/arcacache/arca/internal/egress"
)

// The HTTP stack under the auth client, outermost first:
//
//	http.Client (redirects; Authorization stripped on any host change; no
//	            HTTPS to HTTP downgrade)
//	retryTransport (host health, per-attempt header timeout, body idle
//	                timeout, retries)
//	meterTransport (metrics and rate-limit headers of every attempt)
//	base transport (tuned *http.Transport)
//
// Retries live below auth so a token fetch is retried too, and so a retried
// request carries the token it was sent with. A response body is handed up
// only from the final attempt, so nothing is retried once a caller reads it.

func defaultTransport(connectTimeout, headerTimeout time.Duration, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if dial == nil {
		dial = (&net.Dialer{KeepAlive: 30 * time.Second}).DialContext
	}
	// The connect timeout applies whatever dialer was given; the
	// connection outlives the dial's context once established.
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, connectTimeout)
		defer cancel()
		return dial(ctx, network, addr)
	}
	t.TLSHandshakeTimeout = connectTimeout
	t.ResponseHeaderTimeout = headerTimeout
	t.ExpectContinueTimeout = time.Second
	t.IdleConnTimeout = 90 * time.Second
	t.MaxIdleConnsPerHost = 32
	// Ask for identity encoding: blob bytes and Content-Length stay exactly
	// what the registry stores.
	t.DisableCompression = true
	return t
}

// maxRedirects is net/http's default, which a custom CheckRedirect must
// enforce itself.
const maxRedirects = 10

// checkRedirect strips the Authorization header once a redirect leaves the
// first request's scheme and host:port. net/http only strips it when the
// host name changes (not the port), and rebuilds each hop's headers from
// the first request, hence the comparison with via[0].
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	first := via[0].URL
	if req.URL.Scheme == "http" && via[len(via)-1].URL.Scheme == "https" {
		// A redirect must not take the request (and what it reveals, such
		// as a signed storage URL) off TLS.
		return fmt.Errorf("%w (to %s)", errDowngrade, logURL(req.URL))
	}
	left := req.URL.Scheme != first.Scheme || req.URL.Host != first.Host
	for _, hop := range via[1:] {
		left = left || hop.URL.Scheme != first.Scheme || hop.URL.Host != first.Host
	}
	if left {
		req.Header.Del("Authorization")
	}
	return nil
}

type retryTransport struct {
	next          http.RoundTripper
	health        *health
	maxRetries    int
	headerTimeout time.Duration // per attempt until headers
	idleTimeout   time.Duration // per body Read
	backoff       time.Duration // first wait; doubles per attempt
	maxBackoff    time.Duration
	maxRetryAfter time.Duration
	log           *slog.Logger
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		resp, err := t.attempt(req)
		if attempt >= t.maxRetries || ctx.Err() != nil || !retryable(resp, err) || !replayable(req) {
			return resp, err
		}
		var down *HostDownError
		if errors.As(t.health.check(hostKey(req.URL)), &down) && !down.RateLimited {
			return resp, err // this failure marked the host down: it is the answer
		}
		wait := t.wait(attempt)
		if resp != nil {
			if ra, ok := retryWait(resp.StatusCode, resp.Header, time.Now()); ok {
				if ra > t.maxRetryAfter {
					return resp, nil // asked to wait too long: the caller sees the answer
				}
				wait = ra
			}
			drainClose(resp.Body)
		}
		t.log.LogAttrs(ctx, slog.LevelWarn, "upstream request retry",
			slog.String("method", req.Method), slog.String("url", logURL(req.URL)),
			slog.Int("attempt", attempt+1), slog.Duration("wait", wait), slog.String("reason", reason(resp, err)))
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, ctx.Err()
		case <-timer.C:
		}
	}
}

// replayable: our requests are GET and HEAD without bodies; anything with
// a body that cannot be rewound is not sent twice.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// logURL leaves out the query, which for blob storage redirects holds
// signatures.
func logURL(u *url.URL) string {
	return u.Scheme + "://" + u.Host + u.EscapedPath()
}

// wait is exponential backoff with jitter: a random time in [d/2, d].
func (t *retryTransport) wait(attempt int) time.Duration {
	d := t.backoff << min(attempt, 20)
	if d > t.maxBackoff || d <= 0 {
		d = t.maxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

func reason(resp *http.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	return resp.Status
}

// attempt makes one request, unless the host is marked down, with a
// watchdog that cancels it when headers take longer than the header
// timeout, or later when one body Read takes longer than the idle timeout.
// Its outcome goes into the host's health.
func (t *retryTransport) attempt(req *http.Request) (*http.Response, error) {
	host := hostKey(req.URL)
	t.health.syncShared(req.Context())
	if err := t.health.check(host); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(req.Context())
	w := &watchdog{cancel: cancel}
	w.timer = time.AfterFunc(t.headerTimeout, w.fire)
	resp, err := t.next.RoundTrip(req.WithContext(ctx))
	w.timer.Stop()
	if err != nil {
		cancel()
		if w.fired.Load() && req.Context().Err() == nil {
			err = fmt.Errorf("no response headers within %s: %w", t.headerTimeout, errTimeout)
		}
		t.health.observe(host, nil, err, req.Context().Err() != nil)
		return nil, err
	}
	t.health.observe(host, resp, nil, false)
	resp.Body = &watchedBody{ReadCloser: resp.Body, w: w, timeout: t.idleTimeout,
		stalled: func(err error) { t.health.observe(host, nil, err, req.Context().Err() != nil) }}
	return resp, nil
}

var (
	errTimeout   = errors.New("upstream timeout")
	errDowngrade = errors.New("refused a redirect from https to plain http")
)

type watchdog struct {
	timer  *time.Timer
	cancel context.CancelFunc
	fired  atomic.Bool
}

func (w *watchdog) fire() {
	w.fired.Store(true)
	w.cancel()
}

// watchedBody fails a Read that gets no byte within timeout. Only time
// spent inside Read counts, so a slow consumer is not mistaken for a stalled
// upstream.
type watchedBody struct {
	io.ReadCloser
	w       *watchdog
	timeout time.Duration
	stalled func(error) // reports a stall to the host's health
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.timer.Reset(b.timeout)
	n, err := b.ReadCloser.Read(p)
	b.w.timer.Stop()
	if err != nil && err != io.EOF && b.w.fired.Load() {
		err = fmt.Errorf("upstream sent no data for %s: %w", b.timeout, errTimeout)
		b.stalled(err)
	}
	return n, err
}

func (b *watchedBody) Close() error {
	b.w.timer.Stop()
	err := b.ReadCloser.Close()
	b.w.cancel()
	return err
}

// retryable: network failures (but not TLS or certificate errors, which do
// not heal), 408, 429 and 5xx other than 501 and 505.
func retryable(resp *http.Response, err error) bool {
	if err != nil {
		return !permanent(err)
	}
	switch resp.StatusCode {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

func permanent(err error) bool {
	var down *HostDownError
	if errors.As(err, &down) || egress.IsRefused(err) {
		return true // a decision of ours: retrying now changes nothing
	}
	var (
		unknownAuthority x509.UnknownAuthorityError
		hostname         x509.HostnameError
		invalid          x509.CertificateInvalidError
		verify           *tls.CertificateVerificationError
		record           tls.RecordHeaderError
		dns              *net.DNSError
	)
	switch {
	case errors.As(err, &unknownAuthority), errors.As(err, &hostname), errors.As(err, &invalid),
		errors.As(err, &verify), errors.As(err, &record):
		return true
	case errors.As(err, &dns):
		return dns.IsNotFound
	}
	// net/http turns a TLS handshake with a plain-HTTP server into this
	// string-only error; the fix is --insecure-upstream, not a retry.
	return strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// drainClose reads a little of a body we drop so the connection can be
// reused, then closes it.
func drainClose(rc io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(rc, 64<<10))
	_ = rc.Close()
}

// meterTransport counts every attempt and records rate-limit headers.
type meterTransport struct {
	next    http.RoundTripper
	metrics *metrics
	limits  *rateLimits
}

func (t *meterTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	info := infoFrom(req.Context())
	upstream := CanonicalHost(req.URL.Host)
	if info != nil {
		upstream = info.upstream
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		t.metrics.requests.WithLabelValues(upstream, req.Method, "error").Inc()
		return nil, err
	}
	t.metrics.requests.WithLabelValues(upstream, req.Method, fmt.Sprint(resp.StatusCode)).Inc()
	if info != nil && info.recordLimits {
		t.limits.observe(info.credKey, info.upstream, resp.Header, time.Now())
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, add: t.metrics.bytes.WithLabelValues(upstream).Add}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	add func(float64)
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.add(float64(n))
	}
	return n, err
}
