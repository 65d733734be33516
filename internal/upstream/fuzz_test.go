package upstream

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Fuzz targets for every parser of upstream input. Seeds are in f.Add and
// in testdata/fuzz/<Name>/ when a crash was found.

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "7", "120", "-1", "1e3", "Sun, 22 Nov 2026 08:00:30 GMT", "Sunday, 22-Nov-26 08:01:00 GMT", "Sun Nov 22 08:00:05 2026", "99999999999999999999"} {
		f.Add(s)
	}
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, ok := parseRetryAfter(s, now)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("parseRetryAfter(%q) = %v, %v", s, d, ok)
		}
	})
}

func FuzzParseRateLimit(f *testing.F) {
	for _, s := range []string{"100;w=21600", "20;w=21600", "0", " 5 ; w=\"60\" ; x", ";w=1", "1;w=", "1;;", "18446744073709551616;w=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, w, ok := parseRateLimit(s)
		if ok && (n < 0 || w < 0) {
			t.Fatalf("parseRateLimit(%q) = %d, %v", s, n, w)
		}
		if !ok && (n != 0 || w != 0) {
			t.Fatalf("parseRateLimit(%q) failed but returned %d, %v", s, n, w)
		}
	})
}

func FuzzRetryWait(f *testing.F) {
	now := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	for _, s := range [][3]string{
		{"", "", ""}, {"7", "30", ""}, {"", "30;w=21600", ""}, {"", "86400;w=60", ""}, {"", "0", "1795334460"},
		{"", "", "1795334460"}, {"", "", "9223372036854775807"}, {"", "-1", "-1"}, {"x", "30;w=", "1795334460.5"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, retryAfter, reset, resetTime string) {
		h := http.Header{}
		h.Set("Retry-After", retryAfter)
		h.Set("RateLimit-Reset", reset)
		h.Set("X-RateLimit-Reset", resetTime)
		d, ok := retryWait(http.StatusTooManyRequests, h, now)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("retryWait(%q, %q, %q) = %v, %v", retryAfter, reset, resetTime, d, ok)
		}
		if d > maxRateLimitWait {
			t.Fatalf("retryWait(%q, %q, %q) = %v: a wait above the cap %v", retryAfter, reset, resetTime, d, maxRateLimitWait)
		}
	})
}

func FuzzParseLinkNext(f *testing.F) {
	for _, s := range []string{
		`</v2/app/tags/list?last=v7&n=7>; rel="next"`,
		`<https://a/prev>; rel="prev", <https://a/next>; rel="next"`,
		`<a>;rel=next,<b>`, `<`, `<>`, `>; rel=next`, `<a>; rel="next`, `,,,`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		target, ok := parseLinkNext([]string{s})
		if ok && strings.ContainsAny(target, "<>") {
			t.Fatalf("parseLinkNext(%q) = %q", s, target)
		}
	})
}

func FuzzParseErrorBody(f *testing.F) {
	for _, s := range []string{
		`{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`,
		`{"errors":[]}`, `{"errors":null}`, `{"details":"incorrect username or password"}`,
		`<html>bad gateway</html>`, "\xff\xfe\x00", `{"errors":[{"code":1}]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		code, msg := parseErrorBody(b)
		for _, s := range []string{code, msg} {
			if !utf8.ValidString(s) || strings.ContainsAny(s, "\r\n\x00\x1b") || len(s) > maxErrorMessage {
				t.Fatalf("parseErrorBody(%q) = %q, %q: not a safe one-line string", b, code, msg)
			}
		}
	})
}
