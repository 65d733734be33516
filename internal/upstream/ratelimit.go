package upstream

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the client's Prometheus collectors.
type metrics struct {
	requests  *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	remaining *prometheus.GaugeVec
	limit     *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_upstream_requests_total",
			Help: "HTTP requests made to upstream registries and their token services, every attempt counted, by upstream login server, method and status (\"error\" when no answer arrived).",
		}, []string{"upstream", "method", "status"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arca_upstream_bytes_total",
			Help: "Response body bytes read from upstream registries, by upstream login server.",
		}, []string{"upstream"}),
		remaining: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arca_upstream_ratelimit_remaining",
			Help: "Last ratelimit-remaining header (Docker Hub pull budget) seen, by source \"<credential set or anonymous>@<upstream>\".",
		}, []string{"source"}),
		limit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "arca_upstream_ratelimit_limit",
			Help: "Last ratelimit-limit header seen, by source \"<credential set or anonymous>@<upstream>\".",
		}, []string{"source"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	m.requests, err = register(reg, m.requests)
	if err == nil {
		m.bytes, err = register(reg, m.bytes)
	}
	if err == nil {
		m.remaining, err = register(reg, m.remaining)
	}
	if err == nil {
		m.limit, err = register(reg, m.limit)
	}
	return m, err
}

// register registers c, or reuses the collector already registered under
// its name (several clients may share one registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

type limitKey struct{ credKey, host string }

// rateLimits keeps the last rate-limit headers seen per (credential set or
// anonymous, upstream).
type rateLimits struct {
	mu      sync.Mutex
	byKey   map[limitKey]RateLimit
	metrics *metrics
	hook    func(credKey, host string, rl RateLimit)
}

// Source is the label value rate limits are reported under:
// "<credKey>@<host>", with "anonymous" for an empty credKey.
func Source(credKey, host string) string {
	if credKey == "" {
		credKey = "anonymous"
	}
	return credKey + "@" + CanonicalHost(host)
}

func (s *rateLimits) observe(credKey, host string, h http.Header, now time.Time) {
	remaining, rw, ok := parseRateLimit(h.Get("Ratelimit-Remaining"))
	if !ok {
		return // no header: not limited (or not Docker Hub)
	}
	limit, lw, ok := parseRateLimit(h.Get("Ratelimit-Limit"))
	if !ok {
		limit = -1
	}
	window := max(rw, lw)
	rl := RateLimit{Limit: limit, Remaining: remaining, Window: window, ObservedAt: now}
	s.mu.Lock()
	s.byKey[limitKey{credKey, CanonicalHost(host)}] = rl
	s.mu.Unlock()
	src := Source(credKey, host)
	s.metrics.remaining.WithLabelValues(src).Set(float64(remaining))
	if limit >= 0 {
		s.metrics.limit.WithLabelValues(src).Set(float64(limit))
	}
	if s.hook != nil {
		s.hook(credKey, CanonicalHost(host), rl)
	}
}

func (s *rateLimits) get(credKey, host string) (RateLimit, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rl, ok := s.byKey[limitKey{credKey, CanonicalHost(host)}]
	return rl, ok
}
