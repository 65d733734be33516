package server

import (
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
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
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get(ts.url + "/v2/tool/tags/list")
		if err != nil {
			t.Fatal(err)
		}
		var tl struct{ Tags []string }
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		_ = json.Unmarshal(b, &tl)
		sort.Strings(tl.Tags)
		if strings.Join(tl.Tags, ",") == "1.0,1.1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("active sync did not bring 1.0 and 1.1; tags now %s", b)
		}
		time.Sleep(100 * time.Millisecond)
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
