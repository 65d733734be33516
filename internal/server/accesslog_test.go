package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/redact"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// With --access-log, each request leaves one line with its route,
// repository, status, size, duration, cache result and upstream, and the
// query string (ns shows) without credentials.
func TestAccessLog(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.Push(t, "library/app", "v1", []byte("layer"))
	logs := &lockedBuffer{}
	ts, _ := startServerWith(t, t.TempDir(), logs, ManagementOptions{AdminToken: testAdminToken},
		PullThroughOptions{InsecureUpstreams: []string{up.Host}, Revalidate: time.Minute},
		func(o *Options) {
			o.AccessLog = true
			o.Logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		})
	ts.token = testAdminToken
	ts.rule("library-wild", up.Host+"/library/*", "lib/*")

	req, _ := http.NewRequest("GET", ts.url+"/v2/lib/app/manifests/v1?ns=arca.example&password=hunter2-planted&access_token=tok-planted&X-Amz-Signature=sig-planted", nil)
	req.Header.Set("Authorization", "Basic YXJjYTpwbGFudGVkLWF1dGg=")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("pull: %d", res.StatusCode)
	}
	for _, secret := range []string{"hunter2-planted", "tok-planted", "sig-planted", "YXJjYTpwbGFudGVkLWF1dGg", "planted-auth"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds %q", secret)
		}
	}
	var line map[string]any
	for _, l := range strings.Split(logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "request" && m["route"] == "manifest" {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no access log line for the manifest GET in:\n%s", logs.String())
	}
	want := map[string]any{
		"level": "INFO", "method": "GET", "path": "/v2/lib/app/manifests/v1", "repository": "lib/app",
		"status": float64(200), "cache": "miss", "rule": "library-wild", "upstream": up.Host + "/library/app",
		"query": "ns=arca.example&password=REDACTED&access_token=REDACTED&X-Amz-Signature=REDACTED",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v", k, line[k], v)
		}
	}
	if b, _ := line["bytes"].(float64); b <= 0 {
		t.Errorf("access log bytes = %v", line["bytes"])
	}
	if _, ok := line["duration_ms"].(float64); !ok {
		t.Errorf("access log without duration_ms: %v", line)
	}
}

func TestRedactQuery(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"n=10&last=v1", "n=10&last=v1"},
		{"ns=docker.io", "ns=docker.io"},
		{"digest=sha256:abc&mount=sha256:def&from=a/b", "digest=sha256:abc&mount=sha256:def&from=a/b"},
		{"password=x&Passwd=y&pwd=z", "password=REDACTED&Passwd=REDACTED&pwd=REDACTED"},
		{"access_token=t&refresh_token=r&api-key=k&sig=s&client_secret=c&code=o", "access_token=REDACTED&refresh_token=REDACTED&api-key=REDACTED&sig=REDACTED&client_secret=REDACTED&code=REDACTED"},
		{"pass%77ord=x", "pass%77ord=REDACTED"},
		{"%zz=secret", "REDACTED"},
		{"token", "token"}, // a bare name carries no value
	} {
		if got := redact.Query(c.in); got != c.want {
			t.Errorf("redact.Query(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// FuzzRedactQuery: whatever the query, no value of a credential-like
// parameter (as net/url reads it) survives redaction.
func FuzzRedactQuery(f *testing.F) {
	for _, s := range []string{"ns=docker.io&password=p", "a=1&token=t&b=2", "pass%77ord=x", "%zz=1&key=v", "x=%20&sig=a%26b", "auth=&&&=v"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		out := redact.Query(raw)
		q, err := url.ParseQuery(out)
		if err != nil {
			q, _ = url.ParseQuery(out) // ParseQuery keeps what it could parse
		}
		for name, vals := range q {
			if !redact.IsSecretParam(name) {
				continue
			}
			for _, v := range vals {
				if v != "" && v != redact.Redacted {
					t.Fatalf("redact.Query(%q) = %q keeps %s=%q", raw, out, name, v)
				}
			}
		}
	})
}
