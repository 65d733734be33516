package e2e

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// TestDoctor: arca doctor reports a healthy server, clock and upstreams,
// fails on an unhealthy credential set, and on an upstream that went down.
func TestDoctor(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	app := newImage(t, 6000, "amd64", 2000)
	seedImage(t, up, "library/app", "v1", app)
	seedImage(t, up, "org/tool", "1.0", newImage(t, 6001, "amd64", 1000))
	proxy := upstreamreg.NewFaultProxy(t, up)
	a := startCachingArca(t, []string{proxy.Host()}, nil)
	a.cacheRule(t, "tool-static", proxy.Host()+"/org/tool", "tool")
	a.cacheRule(t, "lib-wild", proxy.Host()+"/library/*", "lib/*")
	getCached(t, a.URL()+"/v2/lib/app/manifests/v1", app.Digest())

	doctor := func() (map[string]string, string, error) {
		out, err := a.tryCLI("doctor", "-o", "json")
		var checks []struct{ Check, Status, Detail string }
		// On failure the CLI's one-line error follows the JSON.
		if jerr := json.NewDecoder(strings.NewReader(out)).Decode(&checks); jerr != nil {
			t.Fatalf("doctor -o json: %v\n%s", jerr, out)
		}
		m := map[string]string{}
		for _, c := range checks {
			m[c.Check] = c.Status
		}
		return m, out, err
	}
	got, out, err := doctor()
	if err != nil {
		t.Errorf("doctor on a healthy server failed: %v\n%s", err, out)
	}
	for _, c := range []string{"server", "management", "clock", "rule default/tool-static", "rule default/lib-wild"} {
		if got[c] != "ok" {
			t.Errorf("healthy server: check %q is %q, want ok\n%s", c, got[c], out)
		}
	}

	a.cli(t, "credential-set", "create", "-r", "default", "-n", "badcreds", "-l", proxy.Host(),
		"-u", "env://ARCA_E2E_NOT_SET_USER", "-p", "env://ARCA_E2E_NOT_SET_PASS", "-o", "none")
	proxy.Down()
	got, out, err = doctor()
	if err == nil {
		t.Errorf("doctor with failures exited 0\n%s", out)
	}
	for c, want := range map[string]string{"server": "ok", "credential-set default/badcreds": "fail", "rule default/tool-static": "fail"} {
		if got[c] != want {
			t.Errorf("check %q is %q, want %s\n%s", c, got[c], want, out)
		}
	}
}
