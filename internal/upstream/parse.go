package upstream

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Parsers of what upstreams send. Each one takes untrusted input, never
// panics, and says "not understood" rather than guessing (fuzzed in
// fuzz_test.go).

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110 §10.2.3). A date in the past means "now" (0, true).
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		secs, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	if d := t.Sub(now); d > 0 {
		return d, true
	}
	return 0, true
}

// parseRateLimit reads a Docker Hub rate-limit header such as
// "100;w=21600": a count and an optional window in seconds. Other
// parameters are ignored; a missing window is 0.
func parseRateLimit(v string) (n int, window time.Duration, ok bool) {
	parts := strings.Split(v, ";")
	n, err := strconv.Atoi(strings.TrimSpace(parts[0]))
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for _, p := range parts[1:] {
		k, val, found := strings.Cut(strings.TrimSpace(p), "=")
		if !found || !strings.EqualFold(strings.TrimSpace(k), "w") {
			continue
		}
		secs, err := strconv.ParseUint(strings.Trim(strings.TrimSpace(val), `"`), 10, 32)
		if err != nil {
			return 0, 0, false
		}
		window = time.Duration(secs) * time.Second
	}
	return n, window, true
}

// parseLinkNext returns the target of the rel="next" link in Link header
// values (RFC 8288): `<url>; rel="next"`, several links separated by commas.
func parseLinkNext(values []string) (string, bool) {
	for _, v := range values {
		for v != "" {
			v = strings.TrimLeft(v, " \t,")
			if !strings.HasPrefix(v, "<") {
				return "", false
			}
			end := strings.IndexByte(v, '>')
			if end < 0 {
				return "", false
			}
			target := v[1:end]
			if strings.ContainsAny(target, "< \t") {
				return "", false
			}
			v = v[end+1:]
			params := v
			if i := strings.IndexByte(v, ','); i >= 0 {
				params, v = v[:i], v[i+1:]
			} else {
				v = ""
			}
			if linkHasRel(params, "next") {
				return target, true
			}
		}
	}
	return "", false
}

// linkHasRel reports whether link parameters (`; rel="next"; type=...`)
// include relation rel (rel may list several, space-separated).
func linkHasRel(params, rel string) bool {
	params = strings.TrimLeft(params, " \t")
	if !strings.HasPrefix(params, ";") {
		return false
	}
	for _, p := range strings.Split(params[1:], ";") {
		k, val, found := strings.Cut(strings.TrimSpace(p), "=")
		if !found || !strings.EqualFold(strings.TrimSpace(k), "rel") {
			continue
		}
		for _, r := range strings.Fields(strings.Trim(strings.TrimSpace(val), `"`)) {
			if strings.EqualFold(r, rel) {
				return true
			}
		}
	}
	return false
}

// maxErrorMessage bounds the message kept from an error body.
const maxErrorMessage = 512

// parseErrorBody reads an OCI error body {"errors":[{"code","message"}]}.
// Anything else (HTML, Docker Hub's token {"details"}, plain text) becomes
// a short one-line message with no code.
func parseErrorBody(body []byte) (code, message string) {
	var oci struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
		Details string `json:"details"`
	}
	if json.Unmarshal(body, &oci) == nil {
		if len(oci.Errors) > 0 {
			return oneLine(oci.Errors[0].Code, 64), oneLine(oci.Errors[0].Message, maxErrorMessage)
		}
		if oci.Details != "" {
			return "", oneLine(oci.Details, maxErrorMessage)
		}
	}
	return "", oneLine(string(body), maxErrorMessage)
}

// oneLine makes untrusted text safe for a log line or an error message:
// valid UTF-8, no control characters, spaces collapsed, at most max bytes.
func oneLine(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			space = b.Len() > 0
			continue
		}
		need := utf8.RuneLen(r)
		if space {
			need++
		}
		if b.Len()+need > max {
			break
		}
		if space {
			b.WriteByte(' ')
			space = false
		}
		b.WriteRune(r)
	}
	return b.String()
}
