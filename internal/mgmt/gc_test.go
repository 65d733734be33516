package mgmt

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/gc"
)

// garbageCollect is a registry write: closed to readers and to principals
// of another registry; it reports what it reclaimed, or would.
func TestGarbageCollectAction(t *testing.T) {
	blobs, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var col *gc.Collector
	f := newFixture(t, func(o *Options) {
		var err error
		col, err = gc.New(o.Store.(gc.Store), blobs, gc.Options{Grace: time.Hour, UploadMaxAge: time.Hour, Holder: "test"})
		if err != nil {
			t.Fatal(err)
		}
		o.GC, o.Retention = col, retentionOf(o)
	})
	// Bytes no metadata records (as a crash between commit and record
	// leaves them): an orphan, reclaimed at once.
	body := []byte("orphan bytes")
	d := digest.FromBytes(body)
	w, err := (&content.Store{Blobs: blobs}).NewWriter(context.Background(), d, int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background(), d, int64(len(body))); err != nil {
		t.Fatal(err)
	}
	tokens := map[string]string{}
	for _, p := range []struct{ name, role, reg string }{
		{"reader", RoleReader, ""}, {"team", RoleContributor, "teamreg"}, {"contrib", RoleContributor, ""},
	} {
		tokens[p.name] = "Bearer " + f.newPrincipalToken(p.name, p.role, p.reg)
	}
	path := base("default") + "/garbageCollect"
	mustStatus(t, "reader", f.doAuth(http.MethodPost, path, nil, tokens["reader"]), http.StatusForbidden)
	mustStatus(t, "other registry's contributor", f.doAuth(http.MethodPost, path, nil, tokens["team"]), http.StatusForbidden)
	mustStatus(t, "GET", f.doAuth(http.MethodGet, path, nil, tokens["contrib"]), http.StatusMethodNotAllowed)
	dry := f.doAuth(http.MethodPost, path, map[string]any{"dryRun": true}, tokens["contrib"])
	mustStatus(t, "dry run", dry, http.StatusOK)
	if j := dry.json(t); j["dryRun"] != true || j["blobs"] != float64(1) || j["orphans"] != float64(1) || j["blobBytes"] != float64(len(body)) {
		t.Fatalf("dry run: %v", j)
	}
	if _, err := blobs.Stat(context.Background(), d); err != nil {
		t.Fatalf("a dry run deleted the blob: %v", err)
	}
	run := f.doAuth(http.MethodPost, path, nil, tokens["contrib"])
	mustStatus(t, "run", run, http.StatusOK)
	if j := run.json(t); j["dryRun"] != false || j["blobs"] != float64(1) || j["blobBytes"] != float64(len(body)) {
		t.Fatalf("run: %v", j)
	}
	if _, err := blobs.Stat(context.Background(), d); err == nil {
		t.Fatal("orphan blob still stored")
	}
	again := f.doAuth(http.MethodPost, path, nil, tokens["contrib"])
	if j := again.json(t); j["blobs"] != float64(0) {
		t.Fatalf("second run: %v", j)
	}
	// One collector at a time: a run while the lease is held elsewhere.
	if ok, err := f.meta.AcquireSyncLease(context.Background(), "", "gc", "another-replica", time.Minute); err != nil || !ok {
		t.Fatal(ok, err)
	}
	busy := f.doAuth(http.MethodPost, path, nil, tokens["contrib"])
	mustStatus(t, "busy", busy, http.StatusConflict)
	if busy.errorCode() != "GarbageCollectionInProgress" {
		t.Fatalf("busy: %s", busy.errorCode())
	}
}

func retentionOf(o *Options) RetentionStore { return o.Store.(RetentionStore) }

// The retention policy for untagged manifests is properties.policies.
// retentionPolicy of the registry (az acr config retention update/show).
func TestRetentionPolicyProperty(t *testing.T) {
	f := newFixture(t, func(o *Options) { o.Retention = retentionOf(o) })
	get := func() map[string]any {
		t.Helper()
		r := f.do(http.MethodGet, base("default"), nil)
		mustStatus(t, "get", r, http.StatusOK)
		return r.json(t)["properties"].(map[string]any)["policies"].(map[string]any)["retentionPolicy"].(map[string]any)
	}
	if p := get(); p["status"] != "disabled" || p["days"] != float64(7) {
		t.Fatalf("default: %v", p)
	}
	for _, bad := range []map[string]any{{"days": 366}, {"days": -1}, {"status": "sometimes"}} {
		r := f.do(http.MethodPatch, base("default"), map[string]any{"properties": map[string]any{"policies": map[string]any{"retentionPolicy": bad}}})
		mustStatus(t, "bad policy", r, http.StatusBadRequest)
	}
	r := f.do(http.MethodPatch, base("default"), map[string]any{"properties": map[string]any{"policies": map[string]any{"retentionPolicy": map[string]any{"days": 0, "status": "Enabled"}}}})
	mustStatus(t, "patch", r, http.StatusOK)
	if p := r.json(t)["properties"].(map[string]any)["policies"].(map[string]any)["retentionPolicy"].(map[string]any); p["status"] != "enabled" || p["days"] != float64(0) || p["lastUpdatedTime"] == nil {
		t.Fatalf("after patch: %v", p)
	}
	if p := get(); p["status"] != "enabled" {
		t.Fatalf("get after patch: %v", p)
	}
	// Only the registry patched.
	r = f.do(http.MethodGet, base("teamreg"), nil)
	if p := r.json(t)["properties"].(map[string]any)["policies"].(map[string]any)["retentionPolicy"].(map[string]any); p["status"] != "disabled" {
		t.Fatalf("teamreg: %v", p)
	}
}
