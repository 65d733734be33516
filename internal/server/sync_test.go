package server

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// An ActiveSync rule created through the management API syncs at once
// (no pull needed); the estimate and on-demand sync endpoints answer.
func TestActiveSyncWired(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	amd64 := &oci.Platform{OS: "linux", Architecture: "amd64"}
	for _, tag := range []string{"1.0", "1.1", "2.0", "dev"} {
		up.PushImage(t, "org/tool", tag, amd64, []byte("layer "+tag))
	}
	ts, _ := startServer(t, t.TempDir(), &lockedBuffer{}, ManagementOptions{AdminToken: testAdminToken},
		PullThroughOptions{InsecureUpstreams: []string{up.Host}, Revalidate: time.Minute})
	ts.token = testAdminToken
	const v = "?api-version=2025-09-01-preview"
	base := armBase + "default"
	props := map[string]any{
		"sourceRepository": up.Host + "/org/tool", "targetRepository": "tool", "syncMode": "ActiveSync",
		"artifactSyncFilters": map[string]any{"tags": map[string]any{"type": "KQL", "query": "Tags | where Name startswith '1.'"}},
	}
	st, est := ts.do("POST", base+"/checkCacheRuleArtifactSyncEstimate"+v, "", map[string]any{"properties": props})
	if st != 200 || est["totalCount"] != float64(4) || est["filteredCount"] != float64(2) {
		t.Fatalf("estimate: %d %v", st, est)
	}
	if st, m := ts.do("PUT", base+"/cacheRules/tool-sync"+v, "", map[string]any{"properties": props}); st != http.StatusCreated {
		t.Fatalf("create: %d %v", st, m)
	}
	// The tag list is the upstream's too: once the first run ended, what
	// it stored is what a pull gets from the cache alone (hit).
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, m := ts.do("GET", base+"/cacheRules/tool-sync"+v, "", nil)
		props, _ := m["properties"].(map[string]any)
		run, _ := props["artifactSyncRun"].(map[string]any)
		if run["lastRunEnd"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no active sync run ended: %v", props)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, tag := range []string{"1.0", "1.1"} {
		if st, c := getManifestCache(t, ts.url+"/v2/tool/manifests/"+tag); st != 200 || c != "hit" {
			t.Fatalf("tag %s after the sync: %d X-Arca-Cache %q, want a hit", tag, st, c)
		}
	}
	if n := up.Requests("GET", "/manifests/2.0"); n != 0 {
		t.Fatalf("a tag outside the filter was fetched %d times", n)
	}
	st, rep := ts.do("POST", base+"/cacheRules/tool-sync/sync"+v, "", map[string]any{"tag": "1.1"})
	if st != 200 || rep["tag"] != "1.1" {
		t.Fatalf("sync 1.1: %d %v", st, rep)
	}
	st, m := ts.do("POST", base+"/cacheRules/tool-sync/sync"+v, "", map[string]any{"tag": "dev"})
	if st != http.StatusBadRequest {
		t.Fatalf("sync outside the filter: %d %v", st, m)
	}
	// cache show carries the last run in detail.
	deadline = time.Now().Add(30 * time.Second)
	for {
		_, m = ts.do("GET", base+"/cacheRules/tool-sync"+v, "", nil)
		props, _ := m["properties"].(map[string]any)
		run, _ := props["artifactSyncRun"].(map[string]any)
		if run["lastRunEnd"] != nil {
			if run["status"] == "" || run["tagsSynced"].(float64)+run["tagsUnchanged"].(float64) < 2 || run["bytesFetched"] == nil {
				t.Fatalf("artifactSyncRun: %v", run)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no finished run in %v", props)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// getManifestCache GETs a manifest and returns its status and X-Arca-Cache.
func getManifestCache(t *testing.T, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Accept", oci.MediaTypeOCIManifest+", "+oci.MediaTypeOCIIndex)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode, res.Header.Get("X-Arca-Cache")
}

// `cache sync --tag T` with the upstream unreachable is 424
// UpstreamRequestFailed (not a missing tag), and the rule's status counts
// the failure it lists.
func TestSyncTagUpstreamDown(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.Push(t, "org/tool", "1.0", []byte("layer"))
	proxy := upstreamreg.NewFaultProxy(t, up)
	ts, _ := startServer(t, t.TempDir(), &lockedBuffer{}, ManagementOptions{AdminToken: testAdminToken},
		PullThroughOptions{InsecureUpstreams: []string{proxy.Host()}, Revalidate: time.Minute})
	ts.token = testAdminToken
	const v = "?api-version=2025-09-01-preview"
	rule := armBase + "default/cacheRules/tool-sync"
	proxy.Down()
	if st, m := ts.do("PUT", rule+v, "", map[string]any{"properties": map[string]any{
		"sourceRepository": proxy.Host() + "/org/tool", "targetRepository": "tool", "syncMode": "ActiveSync"}}); st != http.StatusCreated {
		t.Fatalf("create: %d %v", st, m)
	}
	st, m := ts.do("POST", rule+"/sync"+v, "", map[string]any{"tag": "1.0"})
	e, _ := m["error"].(map[string]any)
	if st != http.StatusFailedDependency || e["code"] != "UpstreamRequestFailed" {
		t.Fatalf("sync with the upstream down: %d %v, want 424 UpstreamRequestFailed", st, m)
	}
	_, m = ts.do("GET", rule+v, "", nil)
	props, _ := m["properties"].(map[string]any)
	run, _ := props["artifactSyncRun"].(map[string]any)
	tagErrs, _ := run["tagErrors"].([]any)
	if len(tagErrs) != 1 || run["tagsFailed"] != float64(1) {
		t.Fatalf("artifactSyncRun after a failed on-demand sync: tagsFailed %v, tagErrors %v; want 1 and 1", run["tagsFailed"], tagErrs)
	}
}
