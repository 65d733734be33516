package server

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// usageSource is what the storage gauges read.
type usageSource interface {
	Usage(ctx context.Context) ([]metadata.RepoUsage, error)
	ListCacheRules(ctx context.Context, registry string) ([]rules.Rule, error)
	CredentialHealth(ctx context.Context) ([]metadata.CredentialHealthRow, error)
}

// storageCollector exposes what the metadata store holds:
// arca_storage_{bytes,blobs,manifests} by registry and rule (rule="" for
// repositories no rule serves) and arca_credential_set_healthy. The
// grouped scans behind them run at most once per maxAge however often
// Prometheus scrapes; in between a scrape gets the last result.
type storageCollector struct {
	src    usageSource
	log    *slog.Logger
	maxAge time.Duration

	bytes, blobs, manifests, credHealthy *prometheus.Desc
	pushedBytes, cachedBytes             *prometheus.Desc

	mu      sync.Mutex // held only by scrapes
	at      time.Time
	samples []prometheus.Metric
}

func newStorageCollector(src usageSource, log *slog.Logger, maxAge time.Duration) *storageCollector {
	labels := []string{"registry", "rule"}
	return &storageCollector{
		src: src, log: log, maxAge: maxAge,
		bytes: prometheus.NewDesc("arca_storage_bytes",
			"Bytes of blobs and manifests held, by registry and rule (rule empty: no rule); a blob in two repositories counts twice.", labels, nil),
		blobs: prometheus.NewDesc("arca_storage_blobs",
			"Blobs linked to repositories, by registry and rule (rule empty: no rule).", labels, nil),
		manifests: prometheus.NewDesc("arca_storage_manifests",
			"Manifests held, by registry and rule (rule empty: no rule).", labels, nil),
		pushedBytes: prometheus.NewDesc("arca_storage_pushed_bytes",
			"Bytes held by repositories with pushed content, by registry (what --storage-quota bounds).", []string{"registry"}, nil),
		cachedBytes: prometheus.NewDesc("arca_storage_cached_bytes",
			"Bytes held by cached repositories (no pushed content), by registry (what --cache-quota bounds).", []string{"registry"}, nil),
		credHealthy: prometheus.NewDesc("arca_credential_set_healthy",
			"1 if a credential set's last health check found it Healthy, 0 if Unhealthy (sets not yet checked are left out).",
			[]string{"registry", "credential_set"}, nil),
	}
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.bytes
	ch <- c.blobs
	ch <- c.manifests
	ch <- c.credHealthy
	ch <- c.pushedBytes
	ch <- c.cachedBytes
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.samples == nil || time.Since(c.at) >= c.maxAge {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		samples, err := c.compute(ctx)
		cancel()
		if err != nil {
			// Keep serving the last result: a gap would fire alerts on
			// "absent" for a passing fault.
			c.log.Warn("storage metrics", "err", err)
		} else {
			c.samples, c.at = samples, time.Now()
		}
	}
	for _, m := range c.samples {
		ch <- m
	}
}

type usageKey struct{ registry, rule string }

func (c *storageCollector) compute(ctx context.Context) ([]prometheus.Metric, error) {
	repos, err := c.src.Usage(ctx)
	if err != nil {
		return nil, err
	}
	indexes := map[string]*rules.Index{}
	sums := map[usageKey]*metadata.RepoUsage{}
	var order []usageKey
	type split struct{ pushed, cached int64 }
	byReg := map[string]*split{}
	var regOrder []string
	for _, u := range repos {
		sp, ok := byReg[u.Registry]
		if !ok {
			sp = &split{}
			byReg[u.Registry] = sp
			regOrder = append(regOrder, u.Registry)
		}
		if u.Pushed {
			sp.pushed += u.Bytes()
		} else {
			sp.cached += u.Bytes()
		}
		ix, ok := indexes[u.Registry]
		if !ok {
			list, err := c.src.ListCacheRules(ctx, u.Registry)
			if err != nil {
				return nil, err
			}
			ix = rules.NewIndex(list)
			indexes[u.Registry] = ix
		}
		k := usageKey{registry: u.Registry}
		if r, _, ok := ix.Match(u.Repo); ok {
			k.rule = r.Name
		}
		s, ok := sums[k]
		if !ok {
			s = &metadata.RepoUsage{}
			sums[k] = s
			order = append(order, k)
		}
		s.Blobs += u.Blobs
		s.BlobBytes += u.BlobBytes
		s.Manifests += u.Manifests
		s.ManifestBytes += u.ManifestBytes
	}
	out := make([]prometheus.Metric, 0, 3*len(order))
	for _, k := range order {
		s := sums[k]
		out = append(out,
			prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(s.BlobBytes+s.ManifestBytes), k.registry, k.rule),
			prometheus.MustNewConstMetric(c.blobs, prometheus.GaugeValue, float64(s.Blobs), k.registry, k.rule),
			prometheus.MustNewConstMetric(c.manifests, prometheus.GaugeValue, float64(s.Manifests), k.registry, k.rule))
	}
	for _, reg := range regOrder {
		out = append(out,
			prometheus.MustNewConstMetric(c.pushedBytes, prometheus.GaugeValue, float64(byReg[reg].pushed), reg),
			prometheus.MustNewConstMetric(c.cachedBytes, prometheus.GaugeValue, float64(byReg[reg].cached), reg))
	}
	creds, err := c.src.CredentialHealth(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range creds {
		if h.Status != rules.Healthy && h.Status != rules.Unhealthy {
			continue
		}
		v := 0.0
		if h.Status == rules.Healthy {
			v = 1
		}
		out = append(out, prometheus.MustNewConstMetric(c.credHealthy, prometheus.GaugeValue, v, h.Registry, h.Name))
	}
	return out, nil
}
