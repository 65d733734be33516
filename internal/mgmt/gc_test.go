package mgmt

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/gc"
	"github.com/arcacache/arca/internal/metadata"
)

// garbageCollect is a registry write: closed to readers and to principals
// of another registry; it is a long-running operation reporting what it
// reclaimed, or would.
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
	mustStatus(t, "PUT", f.doAuth(http.MethodPut, path, nil, tokens["contrib"]), http.StatusMethodNotAllowed)
	store := func(j map[string]any) map[string]any { st, _ := j["store"].(map[string]any); return st }
	dry := f.gcOperation(t, path, map[string]any{"dryRun": true}, tokens["contrib"])
	if st := store(dry); dry["dryRun"] != true || st["blobs"] != float64(1) || st["orphans"] != float64(1) || st["blobBytes"] != float64(len(body)) {
		t.Fatalf("dry run: %v", dry)
	}
	if _, err := blobs.Stat(context.Background(), d); err != nil {
		t.Fatalf("a dry run deleted the blob: %v", err)
	}
	// A registry's own contributor collects that registry's garbage only:
	// the shared blobs need authority over every registry.
	if team := f.gcOperation(t, base("teamreg")+"/garbageCollect", nil, tokens["team"]); team["store"] != nil || team["registry"] != "teamreg" {
		t.Fatalf("registry-scoped run: %v, want no store-wide part", team)
	}
	if _, err := blobs.Stat(context.Background(), d); err != nil {
		t.Fatalf("a registry-scoped run deleted a shared blob: %v", err)
	}
	run := f.gcOperation(t, path, nil, tokens["contrib"])
	if st := store(run); run["dryRun"] != false || st["blobs"] != float64(1) || st["blobBytes"] != float64(len(body)) || run["phase"] != "done" {
		t.Fatalf("run: %v", run)
	}
	if _, err := blobs.Stat(context.Background(), d); err == nil {
		t.Fatal("orphan blob still stored")
	}
	if again := f.gcOperation(t, path, nil, tokens["contrib"]); store(again)["blobs"] != float64(0) {
		t.Fatalf("second run: %v", again)
	}
	// Reclaim: only with store-wide authority, never in a dry run.
	mustStatus(t, "reclaim as a registry's contributor", f.doAuth(http.MethodPost, base("teamreg")+"/garbageCollect", map[string]any{"reclaim": true}, tokens["team"]), http.StatusForbidden)
	if r := f.doAuth(http.MethodPost, path, map[string]any{"reclaim": true, "dryRun": true}, tokens["contrib"]); r.status != http.StatusBadRequest {
		t.Fatalf("reclaim dry run: %d %s", r.status, r.body)
	}
	if j := f.gcOperation(t, path, map[string]any{"reclaim": true}, tokens["contrib"]); j["phase"] != "done" || j["store"] == nil {
		t.Fatalf("reclaim run: %v", j)
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

// gcOperation starts a garbage collection run, polls its status document
// until it ends and returns the result its Location serves.
func (f *fixture) gcOperation(t *testing.T, path string, body any, auth string) map[string]any {
	t.Helper()
	start := f.doAuth(http.MethodPost, path, body, auth)
	mustStatus(t, "start", start, http.StatusAccepted)
	status, location := start.header.Get("Azure-AsyncOperation"), start.header.Get("Location")
	if status == "" || location == "" || start.json(t)["status"] != "InProgress" {
		t.Fatalf("start: headers %v, body %s", start.header, start.body)
	}
	for end := time.Now().Add(30 * time.Second); ; {
		r := f.doAuth(http.MethodGet, status, nil, auth)
		mustStatus(t, "status", r, http.StatusOK)
		st := r.json(t)
		if st["status"] == "Succeeded" {
			if st["endTime"] == nil || st["properties"].(map[string]any)["phase"] != "done" {
				t.Fatalf("succeeded: %s", r.body)
			}
			break
		}
		if st["status"] != "InProgress" || time.Now().After(end) {
			t.Fatalf("status: %s", r.body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res := f.doAuth(http.MethodGet, location, nil, auth)
	mustStatus(t, "result", res, http.StatusOK)
	return res.json(t)
}

// gatedGC is a collector whose runs report a first phase, hand their
// request to the test, report a second phase, then wait for the test to
// say how they end.
type gatedGC struct {
	reqs chan gc.Request
	end  chan error
}

func (g *gatedGC) Run(ctx context.Context, req gc.Request) (gc.Result, error) {
	res := gc.Result{Phase: "uploads", Registry: req.Registry, DryRun: req.DryRun}
	req.Progress(res)
	g.reqs <- req
	res.Phase, res.Manifests = "manifests", 2
	req.Progress(res)
	select {
	case err := <-g.end:
		if err == nil {
			res.Phase = "done"
		}
		return res, err
	case <-ctx.Done():
		return res, ctx.Err()
	}
}

// The operation document of a run goes InProgress (with its progress as
// properties, written again as the run goes) -> Succeeded (the result at
// the Location), Failed (the error; details only in the log), Canceled
// (shutdown), and Failed OperationAbandoned when its replica stopped
// writing it.
func TestGarbageCollectOperationStates(t *testing.T) {
	// Unbuffered: a run waits until the test took its request, after the
	// 202, so its second phase reaches the record only by the heartbeat.
	g := &gatedGC{reqs: make(chan gc.Request), end: make(chan error)}
	f := newFixture(t, func(o *Options) { o.GC = g })
	path := base("default") + "/garbageCollect"
	status := func(url string) map[string]any {
		t.Helper()
		r := f.do(http.MethodGet, url, nil)
		mustStatus(t, "status", r, http.StatusOK)
		return r.json(t)
	}
	start := func() (string, string) {
		t.Helper()
		r := f.do(http.MethodPost, path, map[string]any{"dryRun": true})
		mustStatus(t, "start", r, http.StatusAccepted)
		if j := r.json(t); j["status"] != "InProgress" || j["properties"].(map[string]any)["phase"] != "uploads" {
			t.Fatalf("start: %s", r.body)
		}
		if req := <-g.reqs; req.Registry != "default" || !req.DryRun || !req.StoreWide {
			t.Fatalf("request %+v", req)
		}
		if r.header.Get("Retry-After") == "" || !strings.Contains(r.header.Get("Azure-AsyncOperation"), "/registries/default/operationStatuses/garbagecollect-") {
			t.Fatalf("headers %v", r.header)
		}
		return r.header.Get("Azure-AsyncOperation"), r.header.Get("Location")
	}

	// In progress: the heartbeat writes the latest progress.
	su, loc := start()
	for end := time.Now().Add(10 * time.Second); ; {
		st := status(su)
		if st["status"] != "InProgress" || st["endTime"] != nil {
			t.Fatalf("running: %v", st)
		}
		if p := st["properties"].(map[string]any); p["phase"] == "manifests" && p["manifests"] == float64(2) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("progress never written: %v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustStatus(t, "result while running", f.do(http.MethodGet, loc, nil), http.StatusAccepted)
	// Another registry's principal cannot read the result by its ID.
	team := "Bearer " + f.newPrincipalToken("team", RoleReader, "teamreg")
	mustStatus(t, "other registry's result", f.doAuth(http.MethodGet, loc, nil, team), http.StatusNotFound)
	g.end <- nil
	waitStatus := func(url, want string) map[string]any {
		t.Helper()
		for end := time.Now().Add(10 * time.Second); ; {
			st := status(url)
			if st["status"] == want {
				return st
			}
			if time.Now().After(end) {
				t.Fatalf("status %v, want %s", st, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if st := waitStatus(su, "Succeeded"); st["endTime"] == nil || st["error"] != nil {
		t.Fatalf("succeeded: %v", st)
	}
	res := f.do(http.MethodGet, loc, nil)
	mustStatus(t, "result", res, http.StatusOK)
	if j := res.json(t); j["phase"] != "done" || j["manifests"] != float64(2) || j["dryRun"] != true {
		t.Fatalf("result %v", j)
	}

	// Failed: a generic error; what went wrong is in the log only.
	su, loc = start()
	g.end <- errors.New("disk on fire at /secret/path")
	st := waitStatus(su, "Failed")
	e := st["error"].(map[string]any)
	if e["code"] != "InternalServerError" || strings.Contains(e["message"].(string), "/secret/path") {
		t.Fatalf("failed: %v", st)
	}
	if r := f.do(http.MethodGet, loc, nil); r.status != http.StatusBadRequest || r.errorCode() != "InternalServerError" {
		t.Fatalf("failed result: %d %s", r.status, r.body)
	}
	if !strings.Contains(f.logs.String(), "disk on fire") {
		t.Fatal("the failure is not logged")
	}

	// Abandoned: the replica running it was killed, so nothing writes it
	// any more; polls say it failed once it is older than opStale.
	for _, c := range []struct {
		age  time.Duration
		want string
	}{{opStale / 2, "InProgress"}, {opStale + time.Second, "Failed"}} {
		at := time.Now().Add(-c.age).UTC().Truncate(time.Microsecond)
		id := "garbagecollect-dead-" + c.want
		if err := f.meta.PutOperation(context.Background(), metadata.Operation{ID: id, Registry: "default", Resource: base("default"),
			Status: "InProgress", StartedAt: at, UpdatedAt: at}); err != nil {
			t.Fatal(err)
		}
		st := status(base("default") + "/operationStatuses/" + id)
		if st["status"] != c.want || (c.want == "Failed" && st["error"].(map[string]any)["code"] != "OperationAbandoned") {
			t.Fatalf("written %s ago: %v, want %s", c.age, st, c.want)
		}
	}

	// Canceled: the server shuts down while it runs.
	su, loc = start()
	f.h.StopOperations(context.Background())
	if st := status(su); st["status"] != "Canceled" || st["error"].(map[string]any)["code"] != "OperationCanceled" ||
		st["properties"].(map[string]any)["manifests"] != float64(2) {
		t.Fatalf("canceled: %v", st)
	}
	if r := f.do(http.MethodGet, loc, nil); r.errorCode() != "OperationCanceled" {
		t.Fatalf("canceled result: %d %s", r.status, r.body)
	}
}

// GET .../garbageCollect (`arca gc show` without an ID) answers the status
// document of the registry's last run, as its operationStatuses URL does;
// 404 ResourceNotFound when the registry has none recorded.
func TestGarbageCollectLatest(t *testing.T) {
	g := &gatedGC{reqs: make(chan gc.Request), end: make(chan error)}
	f := newFixture(t, func(o *Options) { o.GC = g })
	path := base("default") + "/garbageCollect"
	reader := "Bearer " + f.newPrincipalToken("reader", RoleReader, "default")
	if r := f.doAuth(http.MethodGet, path, nil, reader); r.status != http.StatusNotFound || r.errorCode() != "ResourceNotFound" {
		t.Fatalf("before any run: %d %s", r.status, r.body)
	}
	var ids []string
	for range 2 {
		r := f.do(http.MethodPost, path, map[string]any{"dryRun": true})
		mustStatus(t, "start", r, http.StatusAccepted)
		<-g.reqs
		ids = append(ids, r.json(t)["name"].(string))
		latest := f.doAuth(http.MethodGet, path, nil, reader)
		mustStatus(t, "latest while running", latest, http.StatusOK)
		if j := latest.json(t); j["name"] != ids[len(ids)-1] || j["status"] != "InProgress" || latest.header.Get("Azure-AsyncOperation") == "" {
			t.Fatalf("latest while running: %s %v, want %s InProgress", latest.body, latest.header, ids[len(ids)-1])
		}
		g.end <- nil
		for end := time.Now().Add(10 * time.Second); ; {
			st := f.doAuth(http.MethodGet, path, nil, reader).json(t)
			if st["status"] == "Succeeded" {
				if st["name"] != ids[len(ids)-1] || st["properties"].(map[string]any)["phase"] != "done" {
					t.Fatalf("latest after the run: %v", st)
				}
				break
			}
			if time.Now().After(end) {
				t.Fatalf("latest never succeeded: %v", st)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if ids[0] == ids[1] {
		t.Fatalf("two runs, one id %s", ids[0])
	}
	// Another registry's runs are its own.
	if r := f.do(http.MethodGet, base("teamreg")+"/garbageCollect", nil); r.status != http.StatusNotFound || r.errorCode() != "ResourceNotFound" {
		t.Fatalf("teamreg: %d %s", r.status, r.body)
	}
	if r := f.do(http.MethodGet, base("default")+"/operationStatuses/garbagecollect-nope", nil); r.status != http.StatusNotFound || r.errorCode() != "ResourceNotFound" {
		t.Fatalf("unknown id: %d %s", r.status, r.body)
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
