package upstream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/egress"
)

// Host health: one view per upstream host (scheme://host:port), shared by
// every request and rule that uses the host. A host that times out, or
// fails healthThreshold attempts in a row (refused, reset, 5xx), is marked
// down for a backoff window: requests to it fail at once instead of each
// paying the timeouts again, so cached content is served at once and cold
// requests get their 424 fast. While it is down a probe (GET /v2/) runs
// every probeEvery and ends the window as soon as the host answers. A 429
// holds requests back until its Retry-After, or without one until the
// reset its rate-limit headers announce (at most an hour), or else for
// Window (probes do not end that early: the host did answer, it asked us
// to wait). With HealthOptions.Shared, a
// 429's hold is the cluster's: it is recorded in the shared store, and
// every replica reads the holds there at most SharedEvery before a
// request goes out (shared.go).

// HealthOptions tune the tracker (zero values: defaults).
type HealthOptions struct {
	// Off disables tracking: every request goes out (tests of retries).
	Off bool
	// Window is the first backoff window (default 10s); it doubles with
	// each consecutive down-marking up to MaxWindow (default 2m). It is
	// also the hold of a 429 that says nothing of how long to wait.
	Window, MaxWindow time.Duration
	// ProbeEvery is the time between probes while a host is down
	// (default 1s).
	ProbeEvery time.Duration
	// Shared, when set, shares 429 hold-backs with the other replicas: a
	// hold one starts is recorded there, and before a request goes out the
	// holds recorded by any replica are read if the last read is older
	// than SharedEvery (default 1s), the bound on how late a replica
	// learns of another's 429.
	Shared      HoldStore
	SharedEvery time.Duration
}

// healthThreshold is how many failed attempts in a row (other than
// timeouts, which count at once: each one already cost a full timeout)
// mark a host down.
const healthThreshold = 3

// HostDownError is returned, without any network traffic, for a request
// to a host that is marked down or holding us back.
type HostDownError struct {
	Host        string // scheme://host:port
	Reason      string // why it was marked down
	Until       time.Time
	RateLimited bool // a 429's Retry-After, not a failure
}

func (e *HostDownError) Error() string {
	if e.RateLimited {
		return fmt.Sprintf("upstream %s asked to wait (429 Too Many Requests) until %s; not sending requests before then",
			e.Host, e.Until.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("upstream %s is marked unhealthy (%s); requests fail fast until %s or until a probe succeeds",
		e.Host, e.Reason, e.Until.UTC().Format(time.RFC3339))
}

// HostState is what the tracker knows about one host.
type HostState struct {
	Host        string
	Healthy     bool
	Reason      string // why it is down, in words fit for a client
	Until       time.Time
	RateLimited bool // held back by a 429, not down
}

type hostState struct {
	failures    int
	until       time.Time
	window      time.Duration // the next down-marking's window
	reason      string
	rateLimited bool
	probing     bool
	published   time.Time // the end of the last hold recorded in the shared store
}

type health struct {
	o     HealthOptions
	probe func(ctx context.Context, host string) error // host is scheme://host:port
	log   *slog.Logger
	up    *prometheus.GaugeVec
	downs *prometheus.CounterVec

	mu    sync.Mutex
	hosts map[string]*hostState

	shared *sharedHolds // nil: holds are this process's own
}

func newHealth(o HealthOptions, probe func(context.Context, string) error, log *slog.Logger, reg prometheus.Registerer) (*health, error) {
	if o.Window <= 0 {
		o.Window = 10 * time.Second
	}
	if o.MaxWindow < o.Window {
		o.MaxWindow = max(2*time.Minute, o.Window)
	}
	if o.ProbeEvery <= 0 {
		o.ProbeEvery = time.Second
	}
	if o.SharedEvery <= 0 {
		o.SharedEvery = time.Second
	}
	h := &health{o: o, probe: probe, log: log, hosts: map[string]*hostState{},
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arca_upstream_host_healthy",
			Help: "1 while an upstream host (scheme://host:port) is used normally, 0 while it is marked unhealthy or holds requests back after a 429.",
		}, []string{"host"}),
		downs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_upstream_host_unhealthy_total",
			Help: "Times an upstream host was marked unhealthy (reason: timeout, error, status) or held requests back (reason: ratelimited).",
		}, []string{"host", "reason"}),
	}
	if o.Shared != nil && !o.Off {
		h.shared = &sharedHolds{store: o.Shared, every: o.SharedEvery}
	}
	if reg == nil {
		return h, nil
	}
	var err error
	if h.up, err = register(reg, h.up); err == nil {
		h.downs, err = register(reg, h.downs)
	}
	return h, err
}

// hostKey is the health key of a request URL.
func hostKey(u *url.URL) string { return strings.ToLower(u.Scheme + "://" + u.Host) }

// check returns a *HostDownError when requests to host must not go out.
func (h *health) check(host string) error {
	if h.o.Off {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.hosts[host]
	if s == nil || !time.Now().Before(s.until) {
		return nil
	}
	return &HostDownError{Host: host, Reason: s.reason, Until: s.until, RateLimited: s.rateLimited}
}

// observe records the outcome of one attempt. callerGone: the request was
// cancelled by its caller, which says nothing about the host.
func (h *health) observe(host string, resp *http.Response, err error, callerGone bool) {
	if h.o.Off || callerGone {
		return
	}
	var down *HostDownError
	switch {
	case err != nil && (errors.As(err, &down) || egress.IsRefused(err)):
		return // decided here, not the host's doing
	case err != nil && errors.Is(err, errTimeout):
		h.fail(host, "timeout", err.Error(), err, healthThreshold)
	case err != nil:
		h.fail(host, "error", transportSummary(err), err, 1)
	case resp.StatusCode == http.StatusTooManyRequests:
		wait, ok := retryWait(resp.StatusCode, resp.Header, time.Now())
		if !ok {
			wait = h.o.Window
		}
		h.hold(host, wait)
	case retryable(resp, nil):
		h.fail(host, "status", "answered "+resp.Status, nil, 1)
	default:
		h.ok(host)
	}
}

func (h *health) state(host string) *hostState {
	s := h.hosts[host]
	if s == nil {
		s = &hostState{window: h.o.Window}
		h.hosts[host] = s
	}
	return s
}

// fail counts a failed attempt; reason is in words of ours (clients see
// it), detail the error itself (for the log).
func (h *health) fail(host, class, reason string, detail error, weight int) {
	h.mu.Lock()
	s := h.state(host)
	s.failures += weight
	if s.failures < healthThreshold || time.Now().Before(s.until) {
		h.mu.Unlock()
		return
	}
	window := s.window
	s.until, s.reason, s.rateLimited = time.Now().Add(window), oneLine(reason, 200), false
	s.window = min(2*s.window, h.o.MaxWindow)
	startProbe := !s.probing
	s.probing = true
	h.mu.Unlock()
	h.up.WithLabelValues(host).Set(0)
	h.downs.WithLabelValues(host, class).Inc()
	h.log.Warn("upstream marked unhealthy", "host", host, "for", window, "reason", reason, "err", detail)
	if startProbe {
		go h.probeLoop(host)
	}
}

// hold holds requests to host back for wait, the host's own answer (a
// 429), and records the hold for the other replicas.
func (h *health) hold(host string, wait time.Duration) {
	until := time.Now().Add(wait)
	h.mu.Lock()
	s := h.state(host)
	if until.After(s.until) {
		s.until, s.rateLimited, s.reason = until, true, "429 Too Many Requests"
	}
	// Requests in flight when the hold began may bring more 429s; only a
	// hold that ends noticeably later is recorded again.
	publish := h.shared != nil && until.After(s.published.Add(time.Second))
	if publish {
		s.published = until
	}
	h.mu.Unlock()
	h.up.WithLabelValues(host).Set(0)
	h.downs.WithLabelValues(host, "ratelimited").Inc()
	if publish {
		go h.shared.record(host, until, h.log)
	}
}

func (h *health) ok(host string) {
	h.mu.Lock()
	s := h.hosts[host]
	if s == nil {
		h.mu.Unlock()
		h.up.WithLabelValues(host).Set(1)
		return
	}
	wasDown := !s.until.IsZero()
	s.failures, s.until, s.window, s.reason, s.rateLimited = 0, time.Time{}, h.o.Window, "", false
	h.mu.Unlock()
	h.up.WithLabelValues(host).Set(1)
	if wasDown {
		h.log.Info("upstream healthy again", "host", host)
	}
}

// probeLoop probes host while it is marked down (not while a 429 holds
// it back) and ends the window at the first answer.
func (h *health) probeLoop(host string) {
	defer func() {
		h.mu.Lock()
		h.state(host).probing = false
		h.mu.Unlock()
	}()
	t := time.NewTicker(h.o.ProbeEvery)
	defer t.Stop()
	for range t.C {
		h.mu.Lock()
		s := h.state(host)
		live := time.Now().Before(s.until) && !s.rateLimited
		h.mu.Unlock()
		if !live {
			return
		}
		if err := h.probe(context.Background(), host); err == nil {
			h.ok(host)
			return
		}
	}
}

// get reports host's state.
func (h *health) get(host string) HostState {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := HostState{Host: host, Healthy: true}
	if s := h.hosts[host]; s != nil && time.Now().Before(s.until) {
		st.Healthy, st.Reason, st.Until, st.RateLimited = false, s.reason, s.until, s.rateLimited
	}
	return st
}

// HostHealth reports the state of the host serving loginServer's API.
func (c *Client) HostHealth(loginServer string) HostState {
	scheme, apiHost := c.endpoint(loginServer)
	return c.health.get(scheme + "://" + apiHost)
}

// probeHost is the health probe: GET /v2/ straight on the metered base
// transport (no retries, no health check). Any answer but a 5xx or 429
// means the host is back: 401 is the normal answer without a token.
func (c *Client) probeHost(ctx context.Context, host string) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ConnectTimeout+c.opts.HeaderTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, host+"/v2/", nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", c.opts.UserAgent)
	resp, err := c.probe.RoundTrip(req)
	if err != nil {
		return err
	}
	drainClose(resp.Body)
	if retryable(resp, nil) || resp.StatusCode == http.StatusTooManyRequests {
		return fmt.Errorf("probe answered %s", resp.Status)
	}
	return nil
}
