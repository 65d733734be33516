package cli

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// --debug shows each request and answer on stderr without the token.
func TestDebugShowsRequestsRedacted(t *testing.T) {
	_, url := newFakeARM(t)
	r := runCLI(t, cliEnv(t, url), "", "cache", "list", "-r", "MyRegistry", "--debug")
	if r.err != nil {
		t.Fatalf("cache list --debug: %v\n%s", r.err, r.stderr)
	}
	for _, want := range []string{"debug: > GET " + url + "/arca/v1/info", "debug: > Authorization: Bearer REDACTED", "debug: < 200 OK", "/cacheRules?api-version="} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("--debug output lacks %q:\n%s", want, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "test-admin-token") || strings.Contains(r.stdout, "test-admin-token") {
		t.Errorf("--debug shows the token:\n%s", r.stderr)
	}
	if r := runCLI(t, cliEnv(t, url), "", "cache", "list", "-r", "MyRegistry"); strings.Contains(r.stderr, "debug:") {
		t.Errorf("debug output without --debug:\n%s", r.stderr)
	}
}

// Credential-like query values and headers are redacted.
func TestDebugTransportRedacts(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Set-Cookie", "session=server-secret")
	}))
	defer srv.Close()
	var out strings.Builder
	c := &http.Client{Transport: debugTransport{base: http.DefaultTransport, w: &out, headers: true}}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/x?api-version=1&sig=sas-secret&X-Amz-Credential=amz-secret", nil)
	req.Header.Set("Authorization", "Basic basic-secret")
	req.Header.Set("X-Api-Key", "key-secret")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for _, secret := range []string{"sas-secret", "amz-secret", "basic-secret", "key-secret", "server-secret"} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("debug output shows %s:\n%s", secret, out.String())
		}
	}
	for _, want := range []string{"api-version=1", "sig=REDACTED", "Authorization: Basic REDACTED", "X-Api-Key: REDACTED", "Set-Cookie: REDACTED"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("debug output lacks %q:\n%s", want, out.String())
		}
	}
}
