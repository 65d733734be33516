package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// servedFamily is one metric family as /metrics serves it.
type servedFamily struct {
	typ    string
	labels []string // sorted
}

// startMetricsArca starts a real arca and gives every metric family a
// sample: a push, a pull-through with a credential set behind an upstream
// that sends rate-limit headers, an active-sync run, and one deferred by
// 429s.
func startMetricsArca(t *testing.T) *arca {
	t.Helper()
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd})
	app := newImage(t, 900, "amd64", 64<<10, 1000)
	seedImage(t, up, "library/app", "v1", app)
	seedImage(t, up, "org/tool", "1.0", newImage(t, 901, "amd64", 2000))
	proxy := upstreamreg.NewFaultProxy(t, up)
	proxy.SetHeader("ratelimit-limit", "100;w=21600")
	proxy.SetHeader("ratelimit-remaining", "90;w=21600")

	a := startCachingArca(t, []string{proxy.Host()},
		[]string{"ARCA_E2E_MUSER=" + up.Username, "ARCA_E2E_MPASS=" + up.Password},
		"--storage-metrics-max-age", "1ms")
	a.cli(t, "credential-set", "create", "-r", "default", "-n", "upcreds", "-l", proxy.Host(),
		"-u", "env://ARCA_E2E_MUSER", "-p", "env://ARCA_E2E_MPASS", "-o", "none")
	a.cacheRule(t, "lib-wild", proxy.Host()+"/library/*", "lib/*", "-c", "upcreds")
	getCached(t, a.URL()+"/v2/lib/app/manifests/v1", app.Digest())
	for _, b := range app.blobs() {
		getCached(t, a.URL()+"/v2/lib/app/blobs/"+sha(b), sha(b))
	}
	a.pushImage(t, "pushed/app", "v1", newImage(t, 902, "amd64", 3000))
	a.cacheRule(t, "tool-sync", proxy.Host()+"/org/tool", "tool", "-c", "upcreds", "--sync", "ActiveSync", "--yes")
	deadline := time.Now().Add(60 * time.Second)
	for a.metric(t, "arca_sync_runs_total", `result="Succeeded"`) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no successful active-sync run within 60s; logs:\n%s", a.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	proxy.TooManyRequests(50, "0")
	a.cacheRule(t, "tool-sync-two", proxy.Host()+"/org/tool", "tool2", "-c", "upcreds", "--sync", "ActiveSync", "--yes")
	for a.metric(t, "arca_sync_deferrals_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("no deferred active-sync run within 60s; logs:\n%s", a.Logs())
		}
		time.Sleep(100 * time.Millisecond)
	}
	return a
}

// scrapeFamilies parses /metrics of a.
func scrapeFamilies(t *testing.T, a *arca) map[string]servedFamily {
	t.Helper()
	r := do(t, "GET", a.URL()+"/metrics", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %s", r)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]servedFamily{}
	for name, f := range fams {
		labels := map[string]bool{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
		sf := servedFamily{typ: strings.ToLower(f.GetType().String())}
		for l := range labels {
			sf.labels = append(sf.labels, l)
		}
		sort.Strings(sf.labels)
		out[name] = sf
		if f.GetType() == dto.MetricType_HISTOGRAM {
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				s := sf
				if suf == "_bucket" {
					s.labels = append(slices.Clone(sf.labels), "le")
					sort.Strings(s.labels)
				}
				out[name+suf] = s
			}
		}
	}
	return out
}

// documentedFamilies reads the metrics table of docs/operations.md.
func documentedFamilies(t *testing.T) map[string]servedFamily {
	t.Helper()
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- metrics-table: begin -->")
	table, _, ok2 := strings.Cut(rest, "<!-- metrics-table: end -->")
	if !ok || !ok2 {
		t.Fatal("docs/operations.md: no metrics-table markers")
	}
	out := map[string]servedFamily{}
	sc := bufio.NewScanner(strings.NewReader(table))
	for sc.Scan() {
		cells := strings.Split(sc.Text(), "|")
		if len(cells) < 6 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		f := servedFamily{typ: strings.TrimSpace(cells[2])}
		for _, l := range strings.Split(cells[3], ",") {
			if l = strings.Trim(strings.TrimSpace(l), "`"); l != "" {
				f.labels = append(f.labels, l)
			}
		}
		sort.Strings(f.labels)
		if _, dup := out[name]; dup {
			t.Errorf("docs/operations.md: %s listed twice", name)
		}
		out[name] = f
	}
	if len(out) == 0 {
		t.Fatal("docs/operations.md: empty metrics table")
	}
	return out
}

// TestMetricsDocumented: the metrics table in docs/operations.md names
// every arca_* family a real server serves, with its type and labels, and
// nothing it does not serve.
func TestMetricsDocumented(t *testing.T) {
	a := startMetricsArca(t)
	served := scrapeFamilies(t, a)
	docs := documentedFamilies(t)
	for name, f := range served {
		if !strings.HasPrefix(name, "arca_") || strings.HasSuffix(name, "_bucket") ||
			strings.HasSuffix(name, "_sum") || strings.HasSuffix(name, "_count") && served[strings.TrimSuffix(name, "_count")].typ == "histogram" {
			continue
		}
		d, ok := docs[name]
		switch {
		case !ok:
			t.Errorf("/metrics serves %s (%s, labels %v), not in docs/operations.md", name, f.typ, f.labels)
		case d.typ != f.typ || !slices.Equal(d.labels, f.labels):
			t.Errorf("%s: docs say %s with labels %v, /metrics has %s with %v", name, d.typ, d.labels, f.typ, f.labels)
		}
	}
	for name := range docs {
		if _, ok := served[name]; !ok {
			t.Errorf("docs/operations.md lists %s, /metrics does not serve it", name)
		}
	}
	// The storage gauges count what the exercise stored.
	if v := a.metric(t, "arca_storage_manifests", `rule="lib-wild"`); v != 1 {
		t.Errorf(`arca_storage_manifests{rule="lib-wild"} = %v, want 1`, v)
	}
	if v := a.metric(t, "arca_storage_blobs", `rule=""`); v != 2 {
		t.Errorf(`arca_storage_blobs{rule=""} (pushed/app: layer and config) = %v, want 2`, v)
	}
	if v := a.metric(t, "arca_credential_set_healthy", `credential_set="upcreds"`); v != 1 {
		t.Errorf("arca_credential_set_healthy{upcreds} = %v, want 1", v)
	}
}

// promSelector finds metric names and the label names of their selectors
// in a PromQL expression: `name{a="x", b=~"y"}` or a bare `name`.
var (
	promName     = regexp.MustCompile(`\b((?:arca|go|process)_[a-zA-Z0-9_]+)\b(\{[^}]*\})?`)
	promLabelKey = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
)

// TestDashboardUsesServedMetrics: every query of deploy/grafana/arca.json
// names metrics, and labels in their selectors, that a real server serves.
func TestDashboardUsesServedMetrics(t *testing.T) {
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "grafana", "arca.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("arca.json: %v", err)
	}
	served := scrapeFamilies(t, startMetricsArca(t))
	queries := 0
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			queries++
			found := promName.FindAllStringSubmatch(q.Expr, -1)
			if len(found) == 0 {
				t.Errorf("panel %q: query %q names no arca metric", p.Title, q.Expr)
			}
			for _, m := range found {
				f, ok := served[m[1]]
				if !ok {
					t.Errorf("panel %q: %s is not served by /metrics", p.Title, m[1])
					continue
				}
				for _, l := range promLabelKey.FindAllStringSubmatch(m[2], -1) {
					// job and instance are added by Prometheus at scrape.
					if !slices.Contains(f.labels, l[1]) && l[1] != "job" && l[1] != "instance" {
						t.Errorf("panel %q: %s has no label %q (it has %v)", p.Title, m[1], l[1], f.labels)
					}
				}
			}
		}
	}
	if queries < 10 {
		t.Errorf("dashboard has %d queries; expected a dashboard", queries)
	}
}

// TestPrometheusAlertRules: deploy/prometheus/alerts.yml passes
// `promtool check rules` and its unit tests (`promtool test rules`).
func TestPrometheusAlertRules(t *testing.T) {
	promtool := toolPath(t, "promtool")
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "deploy", "prometheus")
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
