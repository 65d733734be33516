package portal

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/stats"
)

// Stats supplies the time-bucketed counters (internal/stats.Recorder).
type Stats interface {
	Series(ctx context.Context, registry string, since time.Time) ([]metadata.StatRow, error)
}

// window is a statistics range and its chart step.
type window struct {
	Name  string
	Label string
	Span  time.Duration
	Step  time.Duration
}

var windows = []window{
	{"hour", "Last hour", time.Hour, 5 * time.Minute},
	{"day", "Last day", 24 * time.Hour, 30 * time.Minute},
	{"week", "Last week", 7 * 24 * time.Hour, 2 * time.Hour},
}

// totals are one rule's (or the registry's) counters over a window.
type totals struct {
	Hit, Miss, Coalesced, Stale, Error float64
	BytesCache, BytesUpstream          float64
	// Active-sync runs by result.
	SyncSucceeded, SyncFailed, SyncDeferred, SyncInterrupted float64
}

func (t *totals) add(name string, v float64) {
	switch name {
	case stats.SyncRunPrefix + "succeeded":
		t.SyncSucceeded += v
	case stats.SyncRunPrefix + "failed":
		t.SyncFailed += v
	case stats.SyncRunPrefix + "deferred":
		t.SyncDeferred += v
	case stats.SyncRunPrefix + "interrupted":
		t.SyncInterrupted += v
	case "hit":
		t.Hit += v
	case "miss":
		t.Miss += v
	case "coalesced":
		t.Coalesced += v
	case "stale":
		t.Stale += v
	case "error":
		t.Error += v
	case "bytes_cache":
		t.BytesCache += v
	case "bytes_upstream":
		t.BytesUpstream += v
	}
}

func (t *totals) plus(o totals) {
	t.Hit, t.Miss, t.Coalesced, t.Stale, t.Error = t.Hit+o.Hit, t.Miss+o.Miss, t.Coalesced+o.Coalesced, t.Stale+o.Stale, t.Error+o.Error
	t.BytesCache, t.BytesUpstream = t.BytesCache+o.BytesCache, t.BytesUpstream+o.BytesUpstream
	t.SyncSucceeded, t.SyncFailed = t.SyncSucceeded+o.SyncSucceeded, t.SyncFailed+o.SyncFailed
	t.SyncDeferred, t.SyncInterrupted = t.SyncDeferred+o.SyncDeferred, t.SyncInterrupted+o.SyncInterrupted
}

// SyncRuns is every finished active-sync run.
func (t totals) SyncRuns() float64 {
	return t.SyncSucceeded + t.SyncFailed + t.SyncDeferred + t.SyncInterrupted
}

// Requests is every counted request; Served the ones answered from the cache.
func (t totals) Requests() float64 { return t.Hit + t.Miss + t.Coalesced + t.Stale + t.Error }
func (t totals) Served() float64   { return t.Hit + t.Stale }

type ruleStats struct {
	Name          string
	Target        string
	totals        // embedded: the template reads .Hit, .Miss...
	RateRemaining string
	ActiveSync    bool
	ReqChart      template.HTML
	ByteChart     template.HTML
	SyncChart     template.HTML // for ActiveSync rules and rules with runs in the window
}

type statsPage struct {
	Windows   []window
	Window    window
	Registry  totals
	Rules     []ruleStats
	ReqChart  template.HTML
	ByteChart template.HTML
	SyncChart template.HTML
	Generated string
}

// series sums rows into per-rule totals and per-step buckets from start.
func series(rows []metadata.StatRow, start time.Time, w window) (byRule map[string]*totals, steps map[string][]totals) {
	n := int(w.Span / w.Step)
	byRule, steps = map[string]*totals{}, map[string][]totals{"": make([]totals, n)}
	for _, r := range rows {
		i := int(r.Bucket.Sub(start) / w.Step)
		if i < 0 || i >= n {
			continue
		}
		if byRule[r.Rule] == nil {
			byRule[r.Rule], steps[r.Rule] = &totals{}, make([]totals, n)
		}
		byRule[r.Rule].add(r.Name, float64(r.Value))
		steps[r.Rule][i].add(r.Name, float64(r.Value))
		steps[""][i].add(r.Name, float64(r.Value))
	}
	return byRule, steps
}

func (h *Handler) stats(c *ctx) {
	w := windows[0]
	for _, x := range windows {
		if x.Name == c.r.URL.Query().Get("range") {
			w = x
		}
	}
	now := h.opts.Now()
	// Steps end at the current step's end; buckets are 5-minute aligned.
	end := now.Truncate(w.Step).Add(w.Step)
	start := end.Add(-w.Span)
	rows, err := h.opts.Stats.Series(c, c.reg, start)
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	rs, err := list[cacheRule](c, c.api, "cacheRules")
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	byRule, steps := series(rows, start, w)
	p := statsPage{Windows: windows, Window: w, Generated: now.UTC().Format(time.RFC3339)}
	for _, t := range byRule {
		p.Registry.plus(*t)
	}
	p.ReqChart = requestsChart("Requests of registry "+c.reg, steps[""], start, w)
	p.ByteChart = bytesChart("Bytes of registry "+c.reg, steps[""], start, w)
	p.SyncChart = syncChart("Active-sync runs of registry "+c.reg, steps[""], start, w)
	for _, r := range rs {
		rsx := ruleStats{Name: r.Name, Target: r.Properties.TargetRepository, RateRemaining: "–", ActiveSync: r.Properties.SyncMode == "ActiveSync"}
		if t := byRule[r.Name]; t != nil {
			rsx.totals = *t
		}
		var full struct {
			Properties struct {
				UpstreamRateLimit *struct {
					Limit     int `json:"limit"`
					Remaining int `json:"remaining"`
				} `json:"upstreamRateLimit"`
			} `json:"properties"`
		}
		if err := c.api.do(c, http.MethodGet, "cacheRules/"+url.PathEscape(r.Name), nil, &full); err == nil && full.Properties.UpstreamRateLimit != nil {
			rl := full.Properties.UpstreamRateLimit
			rsx.RateRemaining = fmt.Sprintf("%d / %d", rl.Remaining, rl.Limit)
		}
		st := steps[r.Name]
		if st == nil {
			st = make([]totals, int(w.Span/w.Step))
		}
		rsx.ReqChart = requestsChart("Requests of rule "+r.Name, st, start, w)
		rsx.ByteChart = bytesChart("Bytes of rule "+r.Name, st, start, w)
		if rsx.ActiveSync || rsx.SyncRuns() > 0 {
			rsx.SyncChart = syncChart("Active-sync runs of rule "+r.Name, st, start, w)
		}
		p.Rules = append(p.Rules, rsx)
	}
	sort.Slice(p.Rules, func(i, j int) bool { return p.Rules[i].Name < p.Rules[j].Name })
	h.render(c, http.StatusOK, "stats", page{Title: "Statistics", Nav: "stats", Data: p})
}

// bar is one bar segment series of a chart.
type bar struct {
	label, class string
	value        func(totals) float64
}

func requestsChart(title string, st []totals, start time.Time, w window) template.HTML {
	return chart(title, "requests", st, start, w, []bar{
		{"hits and stale", "c-cache", func(t totals) float64 { return t.Served() }},
		{"misses", "c-up", func(t totals) float64 { return t.Miss }},
		{"coalesced", "c-co", func(t totals) float64 { return t.Coalesced }},
		{"errors", "c-err", func(t totals) float64 { return t.Error }},
	}, func(v float64) string { return fmt.Sprintf("%.0f", v) })
}

func bytesChart(title string, st []totals, start time.Time, w window) template.HTML {
	return chart(title, "bytes", st, start, w, []bar{
		{"served from cache", "c-cache", func(t totals) float64 { return t.BytesCache }},
		{"fetched upstream", "c-up", func(t totals) float64 { return t.BytesUpstream }},
	}, humanBytes)
}

func syncChart(title string, st []totals, start time.Time, w window) template.HTML {
	return chart(title, "runs", st, start, w, []bar{
		{"succeeded", "c-cache", func(t totals) float64 { return t.SyncSucceeded }},
		{"failed", "c-err", func(t totals) float64 { return t.SyncFailed }},
		{"deferred", "c-co", func(t totals) float64 { return t.SyncDeferred }},
		{"interrupted", "c-up", func(t totals) float64 { return t.SyncInterrupted }},
	}, func(v float64) string { return fmt.Sprintf("%.0f", v) })
}

// chart renders stacked bars per step as inline SVG, with a text summary
// for screen readers.
func chart(title, unit string, st []totals, start time.Time, w window, bars []bar, format func(float64) string) template.HTML {
	const width, height, left, bottom = 360.0, 140.0, 44.0, 18.0
	max := 0.0
	sums := make([]float64, len(bars))
	for _, t := range st {
		s := 0.0
		for i, b := range bars {
			s += b.value(t)
			sums[i] += b.value(t)
		}
		if s > max {
			max = s
		}
	}
	var summary []string
	for i, b := range bars {
		summary = append(summary, b.label+" "+format(sums[i]))
	}
	esc := template.HTMLEscapeString
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s, %s: %s">`, width, height, esc(title), esc(w.Label), esc(strings.Join(summary, ", ")))
	fmt.Fprintf(&sb, `<line x1="%.0f" y1="0" x2="%.0f" y2="%.0f" class="axis"/><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" class="axis"/>`,
		left, left, height-bottom, left, height-bottom, width, height-bottom)
	fmt.Fprintf(&sb, `<text x="%.0f" y="10" class="tick" text-anchor="end">%s</text><text x="%.0f" y="%.0f" class="tick" text-anchor="end">0</text>`,
		left-4, esc(format(max)), left-4, height-bottom)
	fmt.Fprintf(&sb, `<text x="%.0f" y="%.0f" class="tick">%s</text><text x="%.0f" y="%.0f" class="tick" text-anchor="end">now</text>`,
		left, height-4, esc(start.UTC().Format("Jan 2 15:04")), width, height-4)
	bw := (width - left) / float64(len(st))
	plot := height - bottom - 2
	for i, t := range st {
		y := height - bottom
		for _, b := range bars {
			v := b.value(t)
			if v <= 0 || max == 0 {
				continue
			}
			hgt := plot * v / max
			y -= hgt
			fmt.Fprintf(&sb, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" class="%s"><title>%s %s: %s</title></rect>`,
				left+float64(i)*bw+0.5, y, bw-1, hgt, b.class, esc(start.Add(time.Duration(i)*w.Step).UTC().Format("15:04")), esc(b.label), esc(format(v)))
		}
	}
	sb.WriteString(`</svg><p class="legend">`)
	for i, b := range bars {
		fmt.Fprintf(&sb, `<span class="key %s"></span>%s: %s `, b.class, esc(b.label), esc(format(sums[i])))
	}
	sb.WriteString(`</p>`)
	return template.HTML(sb.String()) // every interpolated string is escaped above
}
