package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Docker Hub's rate-limit headers, seen on pulls through a rule, show up
// in the rule's GET and in the metrics.
func TestRateLimitsShown(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.Push(t, "library/app", "v1", []byte("layer"))
	proxy := upstreamreg.NewFaultProxy(t, up)
	proxy.SetHeader("ratelimit-limit", "100;w=21600")
	proxy.SetHeader("ratelimit-remaining", "42;w=21600")

	ts, _ := startServer(t, t.TempDir(), &lockedBuffer{}, ManagementOptions{AdminToken: testAdminToken},
		PullThroughOptions{InsecureUpstreams: []string{proxy.Host()}, Revalidate: time.Minute})
	ts.token = testAdminToken
	rule := armBase + "default/cacheRules/app-rule?api-version=2023-07-01"
	if st, m := ts.do("PUT", rule, "", map[string]any{"properties": map[string]any{
		"sourceRepository": proxy.Host() + "/library/app", "targetRepository": "app"}}); st != http.StatusCreated {
		t.Fatalf("create rule: %d %v", st, m)
	}
	res, err := http.Get(ts.url + "/v2/app/manifests/v1")
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("pull: %v %v", res, err)
	}
	res.Body.Close()

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, m := ts.do("GET", rule, "", nil)
		props, _ := m["properties"].(map[string]any)
		if rl, ok := props["upstreamRateLimit"].(map[string]any); ok {
			if rl["remaining"] != float64(42) || rl["limit"] != float64(100) || rl["windowSeconds"] != float64(21600) {
				t.Fatalf("rate limit: %v", rl)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no upstreamRateLimit in %v", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	res, err = http.Get(ts.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(b), "arca_upstream_ratelimit_remaining") {
		t.Fatal("metric arca_upstream_ratelimit_remaining missing")
	}
}

// With --upstream-allow, a rule naming another host fails with the policy's
// reason and no connection (or DNS lookup) is attempted.
func TestUpstreamAllowRefuses(t *testing.T) {
	ts, _ := startServer(t, t.TempDir(), &lockedBuffer{}, ManagementOptions{AdminToken: testAdminToken}, PullThroughOptions{})
	ts.token = testAdminToken
	rule := armBase + "default/cacheRules/mcr-rule?api-version=2023-07-01"
	if st, m := ts.do("PUT", rule, "", map[string]any{"properties": map[string]any{
		"sourceRepository": "mcr.microsoft.com/dotnet/runtime", "targetRepository": "runtime"}}); st != http.StatusCreated {
		t.Fatalf("create rule: %d %v", st, m)
	}
	res, err := http.Get(ts.url + "/v2/runtime/manifests/8.0")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusFailedDependency || !strings.Contains(string(b), "--upstream-allow") {
		t.Fatalf("pull: %d %s", res.StatusCode, b)
	}
}

// Rate limits observed by active sync through a credential set are filed
// where `credential-set show` reads them: sync and pull-through build
// their upstream target with the same credential key.
func TestRateLimitsFromActiveSyncShownOnCredentialSet(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd})
	up.Push(t, "org/tool", "1.0", []byte("layer"))
	proxy := upstreamreg.NewFaultProxy(t, up)
	proxy.SetHeader("ratelimit-limit", "100;w=21600")
	proxy.SetHeader("ratelimit-remaining", "41;w=21600")
	t.Setenv("ARCA_TEST_RL_USER", up.Username)
	t.Setenv("ARCA_TEST_RL_PASS", up.Password)

	ts, _ := startServer(t, t.TempDir(), &lockedBuffer{}, ManagementOptions{AdminToken: testAdminToken},
		PullThroughOptions{InsecureUpstreams: []string{proxy.Host()}, Revalidate: time.Minute})
	ts.token = testAdminToken
	const v = "?api-version=2025-09-01-preview"
	set := armBase + "default/credentialSets/hubcreds" + v
	if st, m := ts.do("PUT", set, "", map[string]any{"identity": map[string]any{"type": "SystemAssigned"}, "properties": map[string]any{
		"loginServer": proxy.Host(), "authCredentials": []any{map[string]any{"name": "Credential1",
			"usernameSecretIdentifier": "env://ARCA_TEST_RL_USER", "passwordSecretIdentifier": "env://ARCA_TEST_RL_PASS"}}}}); st != http.StatusCreated {
		t.Fatalf("create credential set: %d %v", st, m)
	}
	// The credential check may have seen the headers already: forget it,
	// so only what active sync observes can show up.
	proxy.SetHeader("ratelimit-remaining", "17;w=21600")
	if st, m := ts.do("PUT", armBase+"default/cacheRules/tool-sync"+v, "", map[string]any{"properties": map[string]any{
		"sourceRepository": proxy.Host() + "/org/tool", "targetRepository": "tool", "syncMode": "ActiveSync",
		"credentialSetResourceId": armBase + "default/credentialSets/hubcreds"}}); st != http.StatusCreated {
		t.Fatalf("create rule: %d %v", st, m)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, m := ts.do("GET", set, "", nil)
		props, _ := m["properties"].(map[string]any)
		if rl, ok := props["upstreamRateLimit"].(map[string]any); ok && rl["remaining"] == float64(17) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("credential-set show has no rate limit from active sync (remaining 17): %v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
