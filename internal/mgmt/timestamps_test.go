package mgmt

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/gc"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/syncer"
)

// armTimeRe is ACR's timestamp: UTC, seven fraction digits, +00:00.
var armTimeRe = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00$`)

// looksLikeTime matches any RFC 3339 date-time (the start is enough).
var looksLikeTime = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d`)

// Every resource's timestamps have one format, ACR's, whichever resource
// type formats them; each row names the timestamps it must carry.
func TestTimestampsOneFormat(t *testing.T) {
	f := newFixture(t, withIdentities)
	reg := base("default")
	idPath := "/subscriptions/" + testSub + "/resourceGroups/MyResourceGroup/providers/Microsoft.ManagedIdentity/userAssignedIdentities/cacheid"
	id := f.do(http.MethodPut, idPath, map[string]any{"location": "westeurope"})
	mustStatus(t, "identity create", id, http.StatusCreated)
	principal, _ := get(id.json(t), "properties.principalId").(string)
	expiry := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	tests := []struct {
		what, method, path string
		body               any
		status             int
		times              []string // paths that must be timestamps
	}{
		{"registry", http.MethodGet, reg, nil, 200, []string{"properties.creationDate"}},
		{"cache rule", http.MethodPut, reg + "/cacheRules/rule1", ruleBody("quay.io/org/alpine", "alpine", ""), 0, nil},
		{"cache rule shown", http.MethodGet, reg + "/cacheRules/rule1", nil, 200, []string{"properties.creationDate", "systemData.createdAt", "systemData.lastModifiedAt"}},
		{"scope map", http.MethodPut, reg + "/scopeMaps/pullers", map[string]any{"properties": map[string]any{"actions": []string{"repositories/alpine/content/read"}}}, 0, []string{"properties.creationDate"}},
		{"token", http.MethodPut, reg + "/tokens/puller", map[string]any{"properties": map[string]any{"scopeMapId": reg + "/scopeMaps/pullers", "status": "enabled"}}, 0, []string{"properties.creationDate"}},
		{"token passwords", http.MethodPost, reg + "/generateCredentials", map[string]any{"tokenId": reg + "/tokens/puller", "expiry": expiry, "name": "password1"}, 0, []string{"passwords.0.creationTime", "passwords.0.expiry"}},
		{"token shown", http.MethodGet, reg + "/tokens/puller", nil, 200, []string{"properties.creationDate", "properties.credentials.passwords.0.creationTime", "properties.credentials.passwords.0.expiry"}},
		{"role assignment", http.MethodPut, reg + "/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
			roleBody("7f951dda-4ed3-4680-a7ca-43fe172d538d", principal), 201, []string{"properties.createdOn"}},
		{"identity secret", http.MethodPost, idPath + "/resetCredential", nil, 200, []string{"createdDateTime", "endDateTime"}},
		{"identity shown", http.MethodGet, idPath, nil, 200, []string{"properties.clientSecretCreatedDateTime", "properties.clientSecretEndDateTime"}},
		{"principal", http.MethodPut, "/arca/v1/principals/ci-bot", map[string]any{"role": "reader", "registry": "default"}, 200, []string{"creationDate"}},
	}
	for _, tc := range tests {
		r := f.do(tc.method, tc.path, tc.body)
		if tc.status != 0 && r.status != tc.status || r.status >= 300 {
			t.Fatalf("%s: %d %s", tc.what, r.status, r.body)
		}
		doc := r.json(t)
		for _, p := range tc.times {
			if v := getIndexed(doc, p); v == nil {
				t.Errorf("%s: no %s in %s", tc.what, p, r.body)
			}
		}
		walkStrings("", doc, func(path, s string) {
			if looksLikeTime.MatchString(s) && !armTimeRe.MatchString(s) {
				t.Errorf("%s: %s = %q, want ACR's format like 2026-03-24T01:18:39.1902636+00:00", tc.what, path, s)
			}
		})
	}
}

// graceGC reports a reclaim run waiting out the grace period, then ends.
type graceGC struct{ until time.Time }

func (g graceGC) Run(_ context.Context, req gc.Request) (gc.Result, error) {
	res := gc.Result{Phase: "grace", Registry: req.Registry, GraceUntil: armtime.Of(g.until), Store: &gc.StoreResult{Marked: 1}}
	req.Progress(res)
	res.Phase = "done"
	return res, nil
}

// statusSyncer answers every rule's active-sync status with st.
type statusSyncer struct{ st syncer.Status }

func (s statusSyncer) Estimate(context.Context, string, rules.Rule) (any, error) { return nil, nil }
func (s statusSyncer) SyncTag(context.Context, string, string, string) (any, error) {
	return nil, nil
}
func (s statusSyncer) Status(context.Context, string, string) (any, error) { return s.st, nil }

// arca's extensions carry their own timestamps in the same format as the
// resources: the active-sync run of a rule, garbage collection's progress
// and result, the audit log.
func TestExtensionTimestampsOneFormat(t *testing.T) {
	at := time.Date(2026, 3, 24, 1, 18, 39, 190263000, time.UTC)
	st := syncer.Status{Result: syncer.ResultDeferred, RunID: "run1", StartedAt: armtime.Of(at), EndedAt: armtime.Of(at.Add(time.Minute)),
		NextAt: armtime.Of(at.Add(time.Hour)), TagsFailed: 1, TagErrors: []syncer.TagError{{Repo: "alpine", Tag: "v1", Error: "boom", At: armtime.Of(at)}}}
	f := newFixture(t, func(o *Options) { o.GC, o.Syncer = graceGC{until: at.Add(time.Hour)}, statusSyncer{st} })
	reg := base("default")
	active := ruleBody("quay.io/org/alpine", "alpine", "")
	active["properties"].(map[string]any)["syncMode"] = "ActiveSync"
	mustStatus(t, "active rule", f.do(http.MethodPut, reg+"/cacheRules/synced", active), http.StatusCreated)
	gcStart := f.do(http.MethodPost, reg+"/garbageCollect", map[string]any{"reclaim": true})
	mustStatus(t, "gc", gcStart, http.StatusAccepted)
	gcStatus := strings.TrimPrefix(gcStart.header.Get("Azure-AsyncOperation"), f.srv.URL)
	for end := time.Now().Add(10 * time.Second); f.do(http.MethodGet, gcStatus, nil).json(t)["status"] != opSucceeded; {
		if time.Now().After(end) {
			t.Fatal("gc operation never succeeded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	gcResult := strings.TrimPrefix(gcStart.header.Get("Location"), f.srv.URL)
	tests := []struct {
		what  string
		doc   map[string]any
		times []string // paths that must be timestamps
	}{
		{"artifactSyncRun", f.do(http.MethodGet, reg+"/cacheRules/synced", nil).json(t), []string{"properties.artifactSyncRun.lastRunStart",
			"properties.artifactSyncRun.lastRunEnd", "properties.artifactSyncRun.deferredUntil", "properties.artifactSyncRun.tagErrors.0.time"}},
		{"gc started", gcStart.json(t), []string{"startTime", "properties.graceUntil"}},
		{"gc status", f.do(http.MethodGet, gcStatus, nil).json(t), []string{"startTime", "endTime", "properties.graceUntil"}},
		{"gc result", f.do(http.MethodGet, gcResult, nil).json(t), []string{"graceUntil"}},
		{"audit", f.do(http.MethodGet, "/arca/v1/audit", nil).json(t), []string{"value.0.time"}},
	}
	for _, tc := range tests {
		for _, p := range tc.times {
			if v := getIndexed(tc.doc, p); v == nil {
				t.Errorf("%s: no %s in %v", tc.what, p, tc.doc)
			}
		}
		walkStrings("", tc.doc, func(path, s string) {
			if looksLikeTime.MatchString(s) && !armTimeRe.MatchString(s) {
				t.Errorf("%s: %s = %q, want ACR's format like 2026-03-24T01:18:39.1902636+00:00", tc.what, path, s)
			}
		})
	}
	if got := getIndexed(tests[0].doc, "properties.artifactSyncRun.lastRunStart"); got != "2026-03-24T01:18:39.1902630+00:00" {
		t.Errorf("lastRunStart %v", got)
	}
}

// getIndexed is get with numeric segments indexing arrays.
func getIndexed(v any, path string) any {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func walkStrings(path string, v any, fn func(path, s string)) {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			walkStrings(path+"."+k, e, fn)
		}
	case []any:
		for i, e := range x {
			walkStrings(fmt.Sprintf("%s.%d", path, i), e, fn)
		}
	case string:
		fn(path, x)
	}
}
