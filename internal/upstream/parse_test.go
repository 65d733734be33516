package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{"7", 7 * time.Second, true},
		{" 120 ", 120 * time.Second, true},
		{"-1", 0, false},
		{"1.5", 0, false},
		{"99999999999999999999", 0, false},
		{"Sun, 22 Nov 2026 08:00:30 GMT", 30 * time.Second, true},
		{"Sunday, 22-Nov-26 08:01:00 GMT", time.Minute, true}, // RFC 850
		{"Sun Nov 22 08:00:05 2026", 5 * time.Second, true},   // asctime
		{"Sun, 22 Nov 2026 07:00:00 GMT", 0, true},            // past: now
		{"tomorrow", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseRateLimit(t *testing.T) {
	tests := []struct {
		in     string
		n      int
		window time.Duration
		ok     bool
	}{
		{"100;w=21600", 100, 6 * time.Hour, true},
		{"20;w=21600", 20, 6 * time.Hour, true},
		{"0;w=3600", 0, time.Hour, true},
		{"200", 200, 0, true},
		{" 76 ; w=21600 ; comment=\"x\"", 76, 6 * time.Hour, true},
		{"100;W=\"60\"", 100, time.Minute, true},
		{"", 0, 0, false},
		{"abc;w=1", 0, 0, false},
		{"-5;w=1", 0, 0, false},
		{"5;w=forever", 0, 0, false},
	}
	for _, tt := range tests {
		n, w, ok := parseRateLimit(tt.in)
		if n != tt.n || w != tt.window || ok != tt.ok {
			t.Errorf("parseRateLimit(%q) = %d, %v, %v; want %d, %v, %v", tt.in, n, w, ok, tt.n, tt.window, tt.ok)
		}
	}
}

func TestRetryWait(t *testing.T) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	unix := func(d time.Duration) string { return strconv.FormatInt(now.Add(d).Unix(), 10) }
	tests := []struct {
		name   string
		status int
		header map[string]string
		want   time.Duration
		ok     bool
	}{
		{"nothing", 429, nil, 0, false},
		{"Retry-After", 429, map[string]string{"Retry-After": "7"}, 7 * time.Second, true},
		{"Retry-After wins over the reset", 429, map[string]string{"Retry-After": "7", "RateLimit-Reset": "30"}, 7 * time.Second, true},
		{"unusable Retry-After: the reset", 429, map[string]string{"Retry-After": "soon", "RateLimit-Reset": "30"}, 30 * time.Second, true},
		{"RateLimit-Reset", 429, map[string]string{"RateLimit-Reset": "30"}, 30 * time.Second, true},
		{"RateLimit-Reset with a window", 429, map[string]string{"RateLimit-Reset": "30;w=21600"}, 30 * time.Second, true},
		{"lower case, as Docker Hub sends", 429, map[string]string{"ratelimit-reset": " 45 ; w=3600"}, 45 * time.Second, true},
		{"RateLimit-Reset capped at its window", 429, map[string]string{"RateLimit-Reset": "7200;w=60"}, time.Minute, true},
		{"RateLimit-Reset capped at an hour", 429, map[string]string{"RateLimit-Reset": "86400;w=604800"}, time.Hour, true},
		{"RateLimit-Reset in milliseconds by mistake", 429, map[string]string{"RateLimit-Reset": "30000"}, time.Hour, true},
		{"RateLimit-Reset overflowing a Duration", 429, map[string]string{"RateLimit-Reset": "9223372036854775807"}, time.Hour, true},
		{"RateLimit-Reset zero", 429, map[string]string{"RateLimit-Reset": "0"}, 0, false},
		{"RateLimit-Reset negative", 429, map[string]string{"RateLimit-Reset": "-30"}, 0, false},
		{"RateLimit-Reset a date", 429, map[string]string{"RateLimit-Reset": "Sun, 22 Nov 2026 08:00:30 GMT"}, 0, false},
		{"RateLimit-Reset bad window", 429, map[string]string{"RateLimit-Reset": "30;w=x"}, 0, false},
		{"RateLimit-Reset wins over X-RateLimit-Reset", 429, map[string]string{"RateLimit-Reset": "30", "X-RateLimit-Reset": unix(time.Minute)}, 30 * time.Second, true},
		{"unusable RateLimit-Reset: X-RateLimit-Reset", 429, map[string]string{"RateLimit-Reset": "0", "X-RateLimit-Reset": unix(time.Minute)}, time.Minute, true},
		{"X-RateLimit-Reset", 429, map[string]string{"X-RateLimit-Reset": unix(90 * time.Second)}, 90 * time.Second, true},
		{"X-RateLimit-Reset padded", 429, map[string]string{"X-RateLimit-Reset": " " + unix(90*time.Second) + " "}, 90 * time.Second, true},
		{"X-RateLimit-Reset capped at an hour", 429, map[string]string{"X-RateLimit-Reset": unix(48 * time.Hour)}, time.Hour, true},
		{"X-RateLimit-Reset far away", 429, map[string]string{"X-RateLimit-Reset": "9223372036854775807"}, time.Hour, true},
		{"X-RateLimit-Reset now", 429, map[string]string{"X-RateLimit-Reset": unix(0)}, 0, false},
		{"X-RateLimit-Reset past", 429, map[string]string{"X-RateLimit-Reset": unix(-time.Minute)}, 0, false},
		{"X-RateLimit-Reset seconds, not a time", 429, map[string]string{"X-RateLimit-Reset": "60"}, 0, false},
		{"X-RateLimit-Reset negative", 429, map[string]string{"X-RateLimit-Reset": "-1"}, 0, false},
		{"X-RateLimit-Reset fractional", 429, map[string]string{"X-RateLimit-Reset": unix(time.Minute) + ".5"}, 0, false},
		{"X-RateLimit-Reset too large", 429, map[string]string{"X-RateLimit-Reset": "99999999999999999999"}, 0, false},
		{"503: Retry-After only", 503, map[string]string{"Retry-After": "5"}, 5 * time.Second, true},
		{"Retry-After beyond an hour: an hour", 429, map[string]string{"Retry-After": "86400"}, time.Hour, true},
		{"503: no reset", 503, map[string]string{"RateLimit-Reset": "30", "X-RateLimit-Reset": unix(time.Minute)}, 0, false},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.header {
			h.Set(k, v)
		}
		got, ok := retryWait(tt.status, h, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: retryWait(%d, %v) = %v, %v; want %v, %v", tt.name, tt.status, tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseLinkNext(t *testing.T) {
	tests := []struct {
		in   []string
		want string
		ok   bool
	}{
		{nil, "", false},
		{[]string{`</v2/app/tags/list?last=v7&n=7>; rel="next"`}, "/v2/app/tags/list?last=v7&n=7", true},
		{[]string{`</v2/x?n=1>;rel=next`}, "/v2/x?n=1", true},
		{[]string{`<https://a/prev>; rel="prev", <https://a/next>; rel="next"`}, "https://a/next", true},
		{[]string{`<https://a/prev>; rel="prev"`, `<https://a/n2>; rel="last next"`}, "https://a/n2", true},
		{[]string{`<https://a/x>; rel="nextish"`}, "", false},
		{[]string{`https://a/x; rel="next"`}, "", false},
		{[]string{`<https://a/x; rel="next"`}, "", false},
	}
	for _, tt := range tests {
		got, ok := parseLinkNext(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseLinkNext(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestParseErrorBody(t *testing.T) {
	tests := []struct {
		in, code, msg string
	}{
		{`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}`, "MANIFEST_UNKNOWN", "manifest unknown"},
		{`{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."},{"code":"X"}]}`, "TOOMANYREQUESTS", "You have reached your pull rate limit."},
		{`{"details":"incorrect username or password"}`, "", "incorrect username or password"},
		{"<html>\n<body>\tBad   Gateway</body></html>", "", "<html> <body> Bad Gateway</body></html>"},
		{"line1\r\nline2\x00\x1b[31m", "", "line1 line2 [31m"},
		{"", "", ""},
	}
	for _, tt := range tests {
		code, msg := parseErrorBody([]byte(tt.in))
		if code != tt.code || msg != tt.msg {
			t.Errorf("parseErrorBody(%q) = %q, %q; want %q, %q", tt.in, code, msg, tt.code, tt.msg)
		}
	}
	long := strings.Repeat("é", 1000)
	if _, msg := parseErrorBody([]byte(long)); len(msg) > maxErrorMessage || !utf8.ValidString(msg) {
		t.Errorf("long body: message of %d bytes, valid UTF-8 %v", len(msg), utf8.ValidString(msg))
	}
}

func TestCheckRedirectStripsAuthorizationOnHostChange(t *testing.T) {
	mk := func(u string) *http.Request {
		pu, _ := url.Parse(u)
		return &http.Request{URL: pu, Header: http.Header{"Authorization": {"Bearer t"}}}
	}
	tests := []struct {
		via  []string
		to   string
		keep bool
	}{
		{[]string{"https://reg.example/v2/a/blobs/x"}, "https://reg.example/v2/b/blobs/x", true},
		{[]string{"https://reg.example/v2/a/blobs/x"}, "https://reg.example:8443/x", false},  // port change: net/http keeps it
		{[]string{"https://reg.example/v2/a/blobs/x"}, "https://blobs.reg.example/x", false}, // subdomain: net/http keeps it
		{[]string{"http://reg.example:5000/v2/a/blobs/x"}, "http://reg.example:5001/v2/a/blobs/x", false},
		{[]string{"https://reg.example/a", "https://s3.example/b"}, "https://reg.example/c", false}, // came back: still stripped
	}
	for _, tt := range tests {
		var via []*http.Request
		for _, v := range tt.via {
			via = append(via, mk(v))
		}
		req := mk(tt.to)
		if err := checkRedirect(req, via); err != nil {
			t.Fatal(err)
		}
		if got := req.Header.Get("Authorization") != ""; got != tt.keep {
			t.Errorf("redirect %v -> %s: Authorization kept = %v, want %v", tt.via, tt.to, got, tt.keep)
		}
	}
	// Never from TLS to plain HTTP, on any hop.
	for _, via := range [][]string{{"https://reg.example/v2/a"}, {"http://reg.example/v2/a", "https://s3.example/b"}} {
		var reqs []*http.Request
		for _, v := range via {
			reqs = append(reqs, mk(v))
		}
		if err := checkRedirect(mk("http://s3.example/c"), reqs); !errors.Is(err, errDowngrade) {
			t.Errorf("redirect %v -> http://s3.example/c: err = %v, want a refused downgrade", via, err)
		}
	}
	via := make([]*http.Request, maxRedirects)
	for i := range via {
		via[i] = mk("https://reg.example/")
	}
	if err := checkRedirect(mk("https://reg.example/"), via); err == nil {
		t.Error("no error after 10 redirects")
	}
}

func TestHostMapping(t *testing.T) {
	c, err := New(Options{Insecure: []string{"127.0.0.1:5000", "Reg.Local:80"}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		host, path, scheme, apiHost, wantPath, canonical string
	}{
		{"docker.io", "ubuntu", "https", "registry-1.docker.io", "library/ubuntu", "docker.io"},
		{"index.docker.io", "bitnami/redis", "https", "registry-1.docker.io", "bitnami/redis", "docker.io"},
		{"registry-1.docker.io", "alpine", "https", "registry-1.docker.io", "library/alpine", "docker.io"},
		{"ghcr.io", "ubuntu", "https", "ghcr.io", "ubuntu", "ghcr.io"},
		{"127.0.0.1:5000", "library/x", "http", "127.0.0.1:5000", "library/x", "127.0.0.1:5000"},
		{"127.0.0.1:5001", "x", "https", "127.0.0.1:5001", "x", "127.0.0.1:5001"},
		{"reg.local:80", "x", "http", "reg.local:80", "x", "reg.local:80"},
	}
	for _, tt := range tests {
		p, err := c.prepare(Repo{Host: tt.host, Path: tt.path})
		if err != nil {
			t.Fatalf("prepare(%s/%s): %v", tt.host, tt.path, err)
		}
		if p.scheme != tt.scheme || p.apiHost != tt.apiHost || p.repo.Path != tt.wantPath || CanonicalHost(tt.host) != tt.canonical {
			t.Errorf("%s/%s -> %s://%s/%s (canonical %s); want %s://%s/%s (%s)", tt.host, tt.path,
				p.scheme, p.apiHost, p.repo.Path, CanonicalHost(tt.host), tt.scheme, tt.apiHost, tt.wantPath, tt.canonical)
		}
	}
}

func TestBadInputIsRejectedBeforeAnyRequest(t *testing.T) {
	c, err := New(Options{Transport: failTransport{t}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	good := Repo{Host: "reg.example", Path: "app"}
	cases := map[string]error{}
	_, cases["bad repo"] = c.GetManifest(ctx, Repo{Host: "reg.example", Path: "Bad/Name"}, "v1")
	_, cases["no host"] = c.GetManifest(ctx, Repo{Path: "app"}, "v1")
	_, cases["host with path"] = c.GetManifest(ctx, Repo{Host: "reg.example/x", Path: "app"}, "v1")
	_, cases["bad tag"] = c.GetManifest(ctx, good, "-v1")
	_, cases["bad digest ref"] = c.HeadManifest(ctx, good, "sha256:xyz")
	_, _, cases["bad blob digest"] = c.GetBlob(ctx, good, "md5:abc")
	_, cases["bad subject"] = c.Referrers(ctx, good, "sha256:1", "")
	_, cases["creds without key"] = c.GetManifest(ctx, Repo{Host: "reg.example", Path: "app",
		Creds: func(context.Context) (string, string, error) { return "u", "p", nil }}, "v1")
	for name, err := range cases {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := New(Options{Insecure: []string{"http://x:1/"}}); err == nil {
		t.Error("New accepted an insecure host with a scheme")
	}
}

type failTransport struct{ t *testing.T }

func (f failTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.t.Errorf("unexpected request %s %s", r.Method, r.URL)
	return nil, http.ErrNotSupported
}
