package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
)

// Doctor check outcomes.
const (
	checkOK   = "ok"
	checkWarn = "warn"
	checkFail = "fail"
)

// clock skew beyond these is a warning / a failure: upstream tokens and
// certificates are checked against the server's clock.
const (
	skewWarn = 30 * time.Second
	skewFail = 5 * time.Minute
)

type check struct {
	Check  string `json:"check"`
	Status string `json:"status"`
	Detail string `json:"detail"`
}

func newDoctorCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check a running server: health, management access, clock, upstreams behind its rules, credential sets",
		Long: `Check a running arca server and say what is wrong:

  server          /healthz and /readyz answer
  management      the admin token is accepted (GET /arca/v1/info)
  clock           the server's clock (its Date header) is within 30s of this machine's
  rule <r>/<n>    a static rule's upstream answers: a tag list of its target
                  repository fetched through arca (served stale or 424 means
                  the upstream fails); wildcard rules are judged from
                  arca_upstream_requests_total of /metrics; active sync status
  credential-set  the server's last health check of each credential set

Exits 1 if any check fails.`,
		Example: `  arca doctor
  arca doctor -o json --endpoint https://arca.example.com`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.connect()
			if err != nil {
				return err
			}
			endpoint, token, err := o.credentials()
			if err != nil {
				return err
			}
			ctx, cancel := o.context(cmd)
			defer cancel()
			d := &doctor{s: s, endpoint: strings.TrimSuffix(endpoint, "/"), token: token, http: o.httpClient(30 * time.Second)}
			checks := d.run(ctx)
			out := make([]any, 0, len(checks))
			failed := 0
			for _, c := range checks {
				out = append(out, map[string]any{"check": c.Check, "status": c.Status, "detail": c.Detail})
				if c.Status == checkFail {
					failed++
				}
			}
			s.out.table = columnTable([]string{"check", "status", "detail"}, func(_, _ map[string]any) {})
			if err := s.out.print(out); err != nil {
				return err
			}
			if failed > 0 {
				return fmt.Errorf("%d of %d checks failed", failed, len(checks))
			}
			return nil
		},
	}
	o.addFlags(cmd.Flags())
	f := cmd.Flags().Lookup("output")
	f.DefValue, o.output = "table", "table"
	return cmd
}

type doctor struct {
	s        *session
	endpoint string
	token    string
	http     *http.Client
	checks   []check
}

func (d *doctor) add(name, status, format string, a ...any) {
	d.checks = append(d.checks, check{Check: name, Status: status, Detail: fmt.Sprintf(format, a...)})
}

func (d *doctor) run(ctx context.Context) []check {
	d.server(ctx)
	info, err := d.s.serverInfo(ctx)
	if err != nil {
		d.add("management", checkFail, "%v", err)
		return d.checks
	}
	d.add("management", checkOK, "admin token accepted; %d registries", len(info.Registries))
	upstreams := d.upstreamMetrics(ctx)
	for _, reg := range info.Registries {
		path, err := d.s.registryPath(ctx, reg.Name, "")
		if err != nil {
			d.add("registry "+reg.Name, checkFail, "%v", err)
			continue
		}
		host := ""
		if reg.Name != info.DefaultRegistry && len(reg.Hosts) > 0 {
			host = reg.Hosts[0]
		}
		d.rules(ctx, reg.Name, host, path, upstreams)
		d.credentialSets(ctx, reg.Name, path)
	}
	return d.checks
}

// server checks /healthz and /readyz, and the clock by the answer's Date.
func (d *doctor) server(ctx context.Context) {
	var ready *http.Response
	for _, p := range []string{"/healthz", "/readyz"} {
		resp, err := d.get(ctx, p, "")
		if err != nil {
			d.add("server", checkFail, "%s: %v", p, err)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			d.add("server", checkFail, "%s answered %s: %s", p, resp.Status, oneLineBody(body))
			return
		}
		ready = resp
	}
	d.add("server", checkOK, "%s is live and ready", d.endpoint)
	d.clock(ready)
}

func (d *doctor) clock(resp *http.Response) {
	at, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		d.add("clock", checkWarn, "the server sent no Date header")
		return
	}
	// Date has whole seconds: half a second of rounding is no skew.
	skew := time.Until(at).Round(time.Second)
	abs := max(skew, -skew)
	switch {
	case abs > skewFail:
		d.add("clock", checkFail, "server clock is %s off this machine's: upstream tokens and certificates will be rejected; run NTP", skew)
	case abs > skewWarn:
		d.add("clock", checkWarn, "server clock is %s off this machine's", skew)
	default:
		d.add("clock", checkOK, "within %s of this machine's", skewWarn)
	}
}

// rules checks each cache rule of a registry.
func (d *doctor) rules(ctx context.Context, reg, host, path string, upstreams map[string][2]float64) {
	items, err := d.s.list(ctx, withAPIVersion(path+"/cacheRules"))
	if err != nil {
		d.add("rules "+reg, checkFail, "%v", err)
		return
	}
	for _, raw := range items {
		var r struct {
			Name       string `json:"name"`
			Properties struct {
				Source     string `json:"sourceRepository"`
				Target     string `json:"targetRepository"`
				SyncMode   string `json:"syncMode"`
				SyncStatus *struct {
					Status    string `json:"status"`
					LastError string `json:"lastError"`
				} `json:"artifactSyncStatus"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			d.add("rules "+reg, checkFail, "a cache rule is not JSON: %v", err)
			continue
		}
		name := "rule " + reg + "/" + r.Name
		upHost, _, _ := strings.Cut(r.Properties.Source, "/")
		if strings.HasSuffix(r.Properties.Target, "*") {
			d.upstreamFromMetrics(name, upHost, upstreams)
		} else {
			d.probe(ctx, name, host, r.Properties.Target, upHost)
		}
		if st := r.Properties.SyncStatus; st != nil && (st.LastError != "" || strings.Contains(strings.ToLower(st.Status), "fail")) {
			d.add(name+" sync", checkFail, "active sync %s: %s", st.Status, st.LastError)
		}
	}
}

// probe fetches one tag-list page of a static rule's target through arca:
// arca asks the upstream, and says in X-Arca-Cache when it could not.
func (d *doctor) probe(ctx context.Context, name, host, repo, upHost string) {
	resp, err := d.get(ctx, "/v2/"+repo+"/tags/list?n=1", host)
	if err != nil {
		d.add(name, checkFail, "tag list through arca: %v", err)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch cache := resp.Header.Get("X-Arca-Cache"); {
	case resp.StatusCode == http.StatusOK && cache == "stale":
		d.add(name, checkFail, "upstream %s failed: arca serves the tags it has (stale)", upHost)
	case resp.StatusCode == http.StatusOK:
		d.add(name, checkOK, "upstream %s answers", upHost)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		d.add(name, checkWarn, "could not probe upstream %s: the data plane answered %s", upHost, resp.Status)
	default:
		d.add(name, checkFail, "upstream %s: arca answered %s: %s", upHost, resp.Status, oneLineBody(body))
	}
}

// upstreamFromMetrics judges an upstream by arca's request counters:
// requests and failed requests (5xx, 429, no answer) since the server started.
func (d *doctor) upstreamFromMetrics(name, upHost string, upstreams map[string][2]float64) {
	if upstreams == nil {
		d.add(name, checkWarn, "wildcard rule: not probed, and /metrics is not served here")
		return
	}
	c, ok := upstreams[upHost]
	switch {
	case !ok || c[0] == 0:
		d.add(name, checkOK, "wildcard rule: no requests to upstream %s yet", upHost)
	case c[1]/c[0] > 0.5:
		d.add(name, checkFail, "upstream %s: %.0f of %.0f requests failed since the server started", upHost, c[1], c[0])
	case c[1] > 0:
		d.add(name, checkWarn, "upstream %s: %.0f of %.0f requests failed since the server started", upHost, c[1], c[0])
	default:
		d.add(name, checkOK, "upstream %s: %.0f requests, none failed", upHost, c[0])
	}
}

// upstreamMetrics reads arca_upstream_requests_total from /metrics:
// per upstream, all requests and failed ones. nil if /metrics is not here.
func (d *doctor) upstreamMetrics(ctx context.Context) map[string][2]float64 {
	resp, err := d.get(ctx, "/metrics", "")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil
	}
	out := map[string][2]float64{}
	for _, m := range fams["arca_upstream_requests_total"].GetMetric() {
		var up, status string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "upstream":
				up = l.GetValue()
			case "status":
				status = l.GetValue()
			}
		}
		v := m.GetCounter().GetValue()
		c := out[up]
		c[0] += v
		if status == "error" || status == "429" || strings.HasPrefix(status, "5") {
			c[1] += v
		}
		out[up] = c
	}
	return out
}

type credentialHealth struct {
	Status       string `json:"status"`
	ErrorCode    string `json:"errorCode"`
	ErrorMessage string `json:"errorMessage"`
}

// credentialSets reports the server's last health check of each set.
func (d *doctor) credentialSets(ctx context.Context, reg, path string) {
	items, err := d.s.list(ctx, withAPIVersion(path+"/credentialSets"))
	if err != nil {
		d.add("credential-sets "+reg, checkFail, "%v", err)
		return
	}
	for _, raw := range items {
		var cs struct {
			Name       string `json:"name"`
			Properties struct {
				LoginServer string `json:"loginServer"`
				Auth        []struct {
					Health *credentialHealth `json:"credentialHealth"`
				} `json:"authCredentials"`
			} `json:"properties"`
		}
		if err := json.Unmarshal(raw, &cs); err != nil {
			d.add("credential-sets "+reg, checkFail, "a credential set is not JSON: %v", err)
			continue
		}
		name := "credential-set " + reg + "/" + cs.Name
		var h *credentialHealth
		if len(cs.Properties.Auth) > 0 {
			h = cs.Properties.Auth[0].Health
		}
		switch {
		case h == nil:
			d.add(name, checkWarn, "not checked yet (login server %s)", cs.Properties.LoginServer)
		case h.Status == "Healthy":
			d.add(name, checkOK, "healthy for %s", cs.Properties.LoginServer)
		default:
			d.add(name, checkFail, "%s for %s: %s %s", h.Status, cs.Properties.LoginServer, h.ErrorCode, h.ErrorMessage)
		}
	}
}

// get sends an authenticated GET to the server, with Host set to host
// when not empty (a registry served on its own host name).
func (d *doctor) get(ctx context.Context, path, host string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.endpoint+path, nil)
	if err != nil {
		return nil, err
	}
	if host != "" {
		req.Host = host
	}
	if d.token != "" {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := d.http.Do(req)
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // the URL is the endpoint's, already named
	}
	return resp, err
}

func oneLineBody(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
