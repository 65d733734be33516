package auth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func FuzzParseScopes(f *testing.F) {
	for _, s := range []string{"repository:team/app:pull,push", "registry:catalog:*", "repository:host:5000/x:pull", "a:b:c:d", "::", "repository(x):y:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScopes([]string{s})
		if err != nil {
			return
		}
		// What parses prints back to something that parses the same.
		var parts []string
		for _, x := range sc {
			parts = append(parts, x.String())
		}
		again, err := ParseScopes([]string{strings.Join(parts, " ")})
		if err != nil || len(again) != len(sc) {
			t.Fatalf("%q -> %q: %v", s, parts, err)
		}
	})
}

func FuzzParseScopeMapAction(f *testing.F) {
	for _, s := range []string{"repositories/team/*/content/read", "repositories/*/metadata/write", "repositories/a*/content/read"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseScopeMapActions([]string{s})
		if err != nil {
			return
		}
		if err := ValidRepositoryPattern(p[0].Pattern); err != nil {
			t.Fatalf("%q gave pattern %q: %v", s, p[0].Pattern, err)
		}
	})
}

func FuzzTokenRequest(f *testing.F) {
	f.Add("GET", "service=x&scope=repository:a:pull&offline_token=true", "Basic dXNlcjpwYXNz", "")
	f.Add("POST", "", "", "grant_type=password&username=u&password=p&scope=repository:a:pull+registry:catalog:*")
	f.Add("POST", "", "", "grant_type=refresh_token&refresh_token=arca_rt_x&access_type=offline")
	f.Fuzz(func(t *testing.T, method, query, authz, body string) {
		if method != "GET" && method != "POST" {
			method = "GET"
		}
		r := httptest.NewRequest(method, "/oauth2/token?"+url.PathEscape(query), strings.NewReader(body))
		if method == "POST" {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		r.Header.Set("Authorization", authz)
		tr, err := ParseTokenRequest(r)
		if err != nil {
			return
		}
		for _, s := range tr.Scopes {
			if s.Type == "" || s.Name == "" {
				t.Fatalf("empty scope part: %+v", s)
			}
		}
	})
}

// FuzzAuthorize sends arbitrary Authorization headers (Basic, Bearer,
// forged JWTs) through the decision point: none may pass on a closed
// registry with no identities.
func FuzzAuthorize(f *testing.F) {
	svc, _ := newTestService(f, time.Now)
	tok := signedToken(f, svc, "reg01", KindToken, "t1", []Scope{RepoScope("app", Pull)})
	f.Add("Bearer " + tok)
	f.Add("Bearer " + tok[:len(tok)-2])
	f.Add("Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJhY2Nlc3MiOltdfQ.")
	f.Add("Basic cmVnMDE6eA==")
	f.Add("Basic !!!")
	f.Add("Digest x")
	f.Fuzz(func(t *testing.T, h string) {
		r := httptest.NewRequest("GET", "/v2/other/manifests/v1", nil)
		r.Header.Set("Authorization", h)
		w := httptest.NewRecorder()
		if _, ok := svc.Authorize(w, r, "reg01", []Scope{RepoScope("other", Pull)}); ok {
			t.Fatalf("%q was let in", h)
		}
		if w.Code != http.StatusUnauthorized && w.Code != http.StatusForbidden && w.Code != http.StatusTooManyRequests {
			t.Fatalf("%q: status %d", h, w.Code)
		}
	})
}

// FuzzVerifyJWT feeds arbitrary strings and mutations of a valid token to
// the verifier: only the untouched token verifies.
func FuzzVerifyJWT(f *testing.F) {
	svc, _ := newTestService(f, time.Now)
	good := signedToken(f, svc, "reg01", KindToken, "t1", []Scope{RepoScope("app", Pull)})
	f.Add(good)
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.eyJpc3MiOiJhcmNhIn0.")
	f.Add("eyJhbGciOiJIUzI1NiIsImtpZCI6IngifQ.e30.AAAA")
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := svc.keys.Verify(context.Background(), tok, "reg01")
		if err == nil && tok != good {
			t.Fatalf("%q verified as %+v", tok, c)
		}
	})
}
