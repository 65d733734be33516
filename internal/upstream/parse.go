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

// maxRateLimitWait caps a wait read from a rate limit's reset: a reset
// further away is more likely a unit mix-up (milliseconds, or a Unix time
// where seconds were meant) than a real quota window, and past the cap one
// request (answered 429 again, or not) tells again.
const maxRateLimitWait = time.Hour

// retryWait is how long an answer with status asks us to wait before the
// next request: its Retry-After (at most maxRateLimitWait too: one answer
// must not hold every replica back for a day); a 429 without a usable one asks until the
// reset of the rate limit it ran into, RateLimit-Reset (seconds, as Docker
// Hub and the IETF RateLimit header fields send it; a ";w=" window is
// split off and caps it) or else X-RateLimit-Reset (a Unix time in
// seconds, as GitHub and some registries send it), at most
// maxRateLimitWait. A reset that is not in the future is no wait: the
// caller's default applies.
func retryWait(status int, h http.Header, now time.Time) (time.Duration, bool) {
	if d, ok := parseRetryAfter(h.Get("Retry-After"), now); ok {
		return min(d, maxRateLimitWait), true
	}
	if status != http.StatusTooManyRequests {
		return 0, false
	}
	if d, ok := parseRateLimitReset(h.Get("Ratelimit-Reset")); ok {
		return d, true
	}
	return parseRateLimitResetTime(h.Get("X-Ratelimit-Reset"), now)
}

// parseRateLimitReset reads a RateLimit-Reset value, "30" or "30;w=3600":
// seconds until the quota resets, capped at the window (when given) and at
// maxRateLimitWait. Zero is no wait (false).
func parseRateLimitReset(v string) (time.Duration, bool) {
	n, window, ok := parseRateLimit(v)
	if !ok || n == 0 {
		return 0, false
	}
	limit := maxRateLimitWait
	if window > 0 {
		limit = min(limit, window)
	}
	if int64(n) >= int64(limit/time.Second) { // compared in seconds: n may overflow a Duration
		return limit, true
	}
	return time.Duration(n) * time.Second, true
}

// parseRateLimitResetTime reads an X-RateLimit-Reset value, a Unix time in
// seconds, as the wait from now until then, at most maxRateLimitWait. A
// time not after now is no wait (false).
func parseRateLimitResetTime(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" || v[0] < '0' || v[0] > '9' {
		return 0, false
	}
	secs, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false
	}
	left := secs - now.Unix() // both in seconds: no overflow for a valid now
	switch {
	case left <= 0:
		return 0, false
	case left >= int64(maxRateLimitWait/time.Second):
		return maxRateLimitWait, true
	}
	return time.Unix(secs, 0).Sub(now), true
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
