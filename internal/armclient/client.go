// Package armclient is a small client for Azure Resource Manager style
// REST APIs as arca's management plane serves them: bearer auth, JSON
// bodies, {"error":{"code","message"}} errors, long-running operations
// (Azure-AsyncOperation and Location polling) and nextLink paging.
package armclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds any response body read: ARM documents are small and a
// misbehaving server must not make the CLI eat memory.
const maxBody = 16 << 20

// Options configure a Client.
type Options struct {
	// HTTPClient defaults to one with a 60s per-request timeout.
	HTTPClient *http.Client
	// PollInterval is the wait between polls of a long-running operation
	// when the server sends no Retry-After. Defaults to 500ms.
	PollInterval time.Duration
	// MaxPollWait caps a server's Retry-After. Defaults to 10s.
	MaxPollWait time.Duration
	UserAgent   string
}

// Client talks to one endpoint with one token.
type Client struct {
	base  *url.URL
	token string
	opts  Options
}

// New returns a client for endpoint (http or https URL, optionally with a
// path prefix) sending token as a bearer token when it is not empty.
func New(endpoint, token string, opts Options) (*Client, error) {
	u, err := url.Parse(strings.TrimSuffix(endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q: must be an http:// or https:// URL", endpoint)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("endpoint %q: must not carry a query, fragment or user info", endpoint)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 60 * time.Second}
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.MaxPollWait <= 0 {
		opts.MaxPollWait = 10 * time.Second
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "arca-cli"
	}
	return &Client{base: u, token: token, opts: opts}, nil
}

// Endpoint is the base URL the client talks to.
func (c *Client) Endpoint() string { return c.base.String() }

// Response is one HTTP exchange's outcome.
type Response struct {
	StatusCode int
	Header     http.Header
	Body       []byte
}

// Do sends one request to path (relative to the endpoint, with its query)
// or to an absolute URL on the same endpoint. body, when not nil, is sent
// as JSON (json.RawMessage is sent as is). A non-2xx answer is returned
// as *Error.
func (c *Client) Do(ctx context.Context, method, pathOrURL string, body any) (*Response, error) {
	target, err := c.resolve(pathOrURL)
	if err != nil {
		return nil, err
	}
	var rd io.Reader
	if body != nil {
		b, err := marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, redact(target), unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading response: %w", method, redact(target), err)
	}
	r := &Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: b}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return r, newError(resp.StatusCode, b)
	}
	return r, nil
}

func marshal(body any) ([]byte, error) {
	if raw, ok := body.(json.RawMessage); ok {
		return raw, nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(body); err != nil {
		return nil, fmt.Errorf("encoding request body: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// resolve turns a path or an absolute URL into a URL on the endpoint.
// Absolute URLs (operation status, nextLink) are re-based onto the
// endpoint: behind a proxy the server may not know the name clients use,
// and the bearer token must never be sent to another host.
func (c *Client) resolve(pathOrURL string) (string, error) {
	u, err := url.Parse(pathOrURL)
	if err != nil {
		return "", fmt.Errorf("bad URL %q: %w", pathOrURL, err)
	}
	p := u.EscapedPath()
	if u.IsAbs() {
		// The server's absolute URLs already carry the endpoint's path prefix.
		p = strings.TrimPrefix(p, c.base.EscapedPath())
	}
	out := *c.base
	out.RawPath = ""
	out.Path = ""
	s := out.String() + c.base.EscapedPath() + p
	if u.RawQuery != "" {
		s += "?" + u.RawQuery
	}
	return s, nil
}

// redact drops the query (it may carry signatures) from URLs in errors.
func redact(s string) string {
	if i := strings.IndexByte(s, '?'); i >= 0 {
		return s[:i]
	}
	return s
}

// unwrapURLError keeps the cause of a transport error: *url.Error
// repeats the method and URL that our message already names.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// minPollWait is the shortest wait between polls.
const minPollWait = 20 * time.Millisecond

// retryAfter reads Retry-After (seconds) capped at maxWait, or def.
func retryAfter(h http.Header, def, maxWait time.Duration) time.Duration {
	if s := h.Get("Retry-After"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n >= 0 {
			d := time.Duration(n) * time.Second
			// Retry-After: 0 means "now"; a floor keeps a server that
			// always says so from turning polling into a busy loop.
			return min(max(d, minPollWait), maxWait)
		}
	}
	return def
}

// Stream GETs path and returns the response body unread, for downloads
// larger than any ARM document; the caller closes it. A non-2xx answer
// is returned as *Error.
func (c *Client) Stream(ctx context.Context, path string) (io.ReadCloser, error) {
	target, err := c.resolve(path)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", redact(target), unwrapURLError(err))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxBody))
		return nil, newError(resp.StatusCode, b)
	}
	return resp.Body, nil
}
