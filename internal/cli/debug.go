package cli

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/redact"
)

// httpClient is the client commands talk to the server with: timeout 0
// means none (the command's context bounds it). With --verbose or
// --debug every exchange is written to stderr.
func (o *clientOpts) httpClient(timeout time.Duration) *http.Client {
	c := &http.Client{Timeout: timeout}
	if g := o.env.global(); g.verbose || g.debug {
		c.Transport = debugTransport{base: http.DefaultTransport, w: o.env.Stderr, headers: g.debug}
	}
	return c
}

// debugTransport writes each request and its answer to w: method, URL
// (credential-like query values redacted), status and time taken, and
// with headers set the headers (credentials redacted). Bodies are not
// shown.
type debugTransport struct {
	base    http.RoundTripper
	w       io.Writer
	headers bool
}

func (d debugTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	prefix := "verbose: "
	if d.headers {
		prefix = "debug: "
	}
	u := *r.URL
	u.RawQuery = redact.Query(u.RawQuery)
	var b strings.Builder
	fmt.Fprintf(&b, "%s> %s %s\n", prefix, r.Method, u.String())
	if d.headers {
		writeHeaders(&b, prefix+"> ", r.Header)
	}
	fmt.Fprint(d.w, b.String())
	start := time.Now()
	resp, err := d.base.RoundTrip(r)
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		fmt.Fprintf(d.w, "%s< error after %s: %v\n", prefix, took, err)
		return nil, err
	}
	b.Reset()
	fmt.Fprintf(&b, "%s< %s (%s)\n", prefix, resp.Status, took)
	if d.headers {
		writeHeaders(&b, prefix+"< ", resp.Header)
	}
	fmt.Fprint(d.w, b.String())
	return resp, nil
}

// secretHeaders are headers whose values are never shown (lower case).
var secretHeaders = map[string]bool{"authorization": true, "proxy-authorization": true, "cookie": true, "set-cookie": true}

func writeHeaders(b *strings.Builder, prefix string, h http.Header) {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := strings.Join(h[k], ", ")
		if lk := strings.ToLower(k); secretHeaders[lk] || redact.IsSecretParam(lk) {
			scheme, _, _ := strings.Cut(v, " ")
			v = redact.Redacted
			if lk == "authorization" && scheme != "" {
				v = scheme + " " + redact.Redacted
			}
		}
		fmt.Fprintf(b, "%s%s: %s\n", prefix, k, v)
	}
}
