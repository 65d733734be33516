package syncer_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/syncer"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

var amd64 = &oci.Platform{OS: "linux", Architecture: "amd64"}

// TestMovedAndDeletedTags: between two runs one tag moves and one is
// deleted upstream. The second run HEADs each listed tag, fetches only the
// moved tag's new content, and keeps the deleted tag.
func TestMovedAndDeletedTags(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	a := pushImage(t, up, "moving", "a", amd64, 1000)
	b := pushImage(t, up, "moving", "b", amd64, 1001)
	c := pushImage(t, up, "moving", "c", amd64, 1002)
	e := newEnv(t, up.Host)
	s, _ := e.newSyncer(syncer.Options{})
	e.putRule(rules.Rule{Name: "moving-rule", Source: up.Host + "/moving", Target: "moving"})
	if st := e.syncRule(s, "moving-rule"); st.TagsSynced != 3 {
		t.Fatalf("first run: %+v", st)
	}

	b2 := pushImage(t, up, "moving", "b", amd64, 1003) // b moves
	deleteManifest(t, up, "moving", c.desc.Digest)     // c is deleted upstream
	heads, gets, blobs := manifestRequests(up, http.MethodHead), manifestRequests(up, http.MethodGet), blobGETs(up)

	st := e.syncRule(s, "moving-rule")
	if st.Result != syncer.ResultSucceeded || st.TagsSynced != 1 || st.TagsUnchanged != 1 || st.TagsFailed != 0 {
		t.Fatalf("second run: %+v", st)
	}
	same(t, "tags", e.tags("moving"), []string{"a", "b", "c"})
	tag, err := e.meta.GetTag(context.Background(), testRegistry, "moving", "b")
	if err != nil || tag.Digest != b2.desc.Digest {
		t.Fatalf("b points at %s (%v), want %s", tag.Digest, err, b2.desc.Digest)
	}
	same(t, "manifests", e.manifests("moving"), digests(a.desc.Digest, b.desc.Digest, c.desc.Digest, b2.desc.Digest))

	// What the second run asked of the upstream.
	newHeads := diff(manifestRequests(up, http.MethodHead), heads)
	newGets := diff(manifestRequests(up, http.MethodGet), gets)
	newBlobs := diff(blobGETs(up), blobs)
	sameCounts(t, "manifest HEADs", newHeads, map[string]int{"a": 1, "b": 1})
	sameCounts(t, "manifest GETs", newGets, map[string]int{b2.desc.Digest.String(): 1})
	want := map[string]int{}
	for _, d := range b2.blobs {
		want[d.String()] = 1
	}
	sameCounts(t, "blob GETs", newBlobs, want)
}

func deleteManifest(t *testing.T, up *upstreamreg.Registry, repo string, d digest.Digest) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, up.URL()+"/v2/"+repo+"/manifests/"+d.String(), nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("delete %s: %d", d, res.StatusCode)
	}
}

func diff(after, before map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range after {
		if n := v - before[k]; n != 0 {
			out[k] = n
		}
	}
	return out
}

func sameCounts(t *testing.T, what string, got, want map[string]int) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// cancelAfter is the real cache with a hand on the power switch: it cancels
// the run once n blobs have been fetched.
type cancelAfter struct {
	*cache.Cache
	mu     sync.Mutex
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Prefetch(ctx context.Context, reg string, t cache.Target, d digest.Digest) (cache.Status, error) {
	st, err := c.Cache.Prefetch(ctx, reg, t, d)
	c.mu.Lock()
	defer c.mu.Unlock()
	if st == cache.Miss {
		if c.n--; c.n == 0 {
			c.cancel()
		}
	}
	return st, err
}

// TestInterruptedRunResumes stops a run halfway (as a shutdown does), then
// a new process over the same data dir finishes it without fetching any
// finished blob or manifest again: the upstream's access log shows one GET
// per blob and per manifest.
func TestInterruptedRunResumes(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	var imgs []image
	for i := range 12 {
		imgs = append(imgs, pushImage(t, up, "big", fmt.Sprintf("t%02d", i), amd64, 256<<10+i))
	}
	baseBlobs, baseManifests := blobGETs(up), manifestRequests(up, http.MethodGet)
	dir := t.TempDir()
	first := openEnv(t, dir, up.Host)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s1, _ := first.newSyncer(syncer.Options{Concurrency: 2, Cache: &cancelAfter{Cache: first.cache, n: 9, cancel: cancel}})
	first.putRule(rules.Rule{Name: "big-rule", Source: up.Host + "/big", Target: "big"})
	if _, err := s1.SyncRule(ctx, testRegistry, "big-rule"); err != nil {
		t.Fatal(err)
	}
	st, err := s1.Status(context.Background(), testRegistry, "big-rule")
	if err != nil {
		t.Fatal(err)
	}
	if st.Result != syncer.ResultInterrupted || st.TagsSynced == 0 || st.TagsSynced >= 12 {
		t.Fatalf("interrupted run: %+v", st)
	}
	first.cache.Wait() // transfers already under way finish (a shutdown waits for them too)
	t.Logf("interrupted after %d of 12 tags", st.TagsSynced)

	// "Restart": a new replica process over the same data dir. Run sees the
	// interrupted run and resumes it at once.
	second := openEnv(t, dir, up.Host)
	s2, _ := second.newSyncer(syncer.Options{Poll: 20 * time.Millisecond})
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s2.Run(runCtx) }()
	waitFor(t, func() bool {
		st, err := s2.Status(context.Background(), testRegistry, "big-rule")
		return err == nil && st.Result == syncer.ResultSucceeded
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st, _ = s2.Status(context.Background(), testRegistry, "big-rule")
	if st.TagsFailed != 0 || st.TagsSynced+st.TagsUnchanged != 12 {
		t.Fatalf("resumed run: %+v", st)
	}

	var want []digest.Digest
	wantGETs := map[string]int{}
	wantManifestGETs := map[string]int{}
	tags := []string{}
	for i, img := range imgs {
		want = append(want, img.blobs...)
		for _, b := range img.blobs {
			wantGETs[b.String()] = 1
		}
		wantManifestGETs[img.desc.Digest.String()] = 1
		tags = append(tags, fmt.Sprintf("t%02d", i))
	}
	same(t, "tags", second.tags("big"), tags)
	same(t, "blobs", second.blobsOf("big"), digests(want...))
	sameCounts(t, "upstream GETs per blob", diff(blobGETs(up), baseBlobs), wantGETs)
	sameCounts(t, "upstream GETs per manifest", diff(manifestRequests(up, http.MethodGet), baseManifests), wantManifestGETs)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSchedulerOneReplicaPerRule: two replicas share a data dir. A new
// rule is synced at once, by one of them only; a changed rule is synced
// again at once (Trigger on one replica, the other notices the change).
func TestSchedulerOneReplicaPerRule(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	x := pushImage(t, up, "sched", "x1", amd64, 5000)
	y := pushImage(t, up, "sched", "y1", amd64, 5001)
	base := blobGETs(up)
	dir := t.TempDir()
	r1, r2 := openEnv(t, dir, up.Host), openEnv(t, dir, up.Host)
	s1, m1 := r1.newSyncer(syncer.Options{Poll: 10 * time.Millisecond, Holder: "replica-1"})
	s2, m2 := r2.newSyncer(syncer.Options{Poll: 10 * time.Millisecond, Holder: "replica-2"})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range []*syncer.Syncer{s1, s2} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()

	rule := rules.Rule{Name: "sched-rule", Source: up.Host + "/sched", Target: "sched", Filters: rules.Filters{Tags: "Tags | where Name startswith 'x'"}}
	r1.putRule(rule)
	runs := func() float64 {
		return counter(t, m1, "arca_sync_runs_total") + counter(t, m2, "arca_sync_runs_total")
	}
	waitFor(t, func() bool { return runs() == 1 })
	time.Sleep(200 * time.Millisecond) // 20 polls each: nobody runs it again
	if n := runs(); n != 1 {
		t.Fatalf("%v runs of a new rule, want 1", n)
	}
	same(t, "tags", r1.tags("sched"), []string{"x1"})

	rule.Filters.Tags = ""
	r2.putRule(rule)
	s2.Trigger(testRegistry, rule.Name)
	waitFor(t, func() bool { return runs() == 2 })
	time.Sleep(200 * time.Millisecond)
	if n := runs(); n != 2 {
		t.Fatalf("%v runs after one change, want 2", n)
	}
	same(t, "tags", r1.tags("sched"), []string{"x1", "y1"})
	want := map[string]int{}
	for _, d := range append(append([]digest.Digest{}, x.blobs...), y.blobs...) {
		want[d.String()] = 1
	}
	sameCounts(t, "upstream GETs per blob", diff(blobGETs(up), base), want)
	st, err := s1.Status(context.Background(), testRegistry, rule.Name)
	if err != nil || st.Result != syncer.ResultSucceeded {
		t.Fatalf("status %+v %v", st, err)
	}
	got, err := r1.meta.GetCacheRule(context.Background(), testRegistry, rule.Name)
	if err != nil || got.SyncStatus == nil || got.SyncStatus.Status != syncer.ResultSucceeded || got.SyncStatus.SyncedTags != 2 {
		t.Fatalf("rule syncStatus: %+v %v", got.SyncStatus, err)
	}
}

// TestWildcardRuleSyncsPulledRepositories: a wildcard rule syncs the
// repositories already pulled through under it, and no others.
func TestWildcardRuleSyncsPulledRepositories(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	a1 := pushImage(t, up, "wild/a", "1", amd64, 700)
	a2 := pushImage(t, up, "wild/a", "2", amd64, 701)
	pushImage(t, up, "wild/b", "1", amd64, 702)
	e := newEnv(t, up.Host)
	s, _ := e.newSyncer(syncer.Options{})
	e.putRule(rules.Rule{Name: "wild-rule", Source: up.Host + "/wild/*", Target: "w/*"})

	srv := e.handler()
	get(t, srv.URL+"/v2/w/a/manifests/1", oci.MediaTypeOCIManifest) // a client looks at w/a:1
	st := e.syncRule(s, "wild-rule")
	// Both tags are synced: 2 is new, and 1's blobs were never pulled.
	if st.Result != syncer.ResultSucceeded || st.TagsSynced != 2 || st.TagsUnchanged != 0 {
		t.Fatalf("status: %+v", st)
	}
	same(t, "repositories", e.repos(), []string{"w/a"})
	same(t, "tags", e.tags("w/a"), []string{"1", "2"})
	same(t, "manifests", e.manifests("w/a"), digests(a1.desc.Digest, a2.desc.Digest))

	// SyncTag names the repository for a wildcard rule.
	rep, err := s.SyncTag(context.Background(), testRegistry, "wild-rule", "w/b:1")
	if err != nil || rep.Result != syncer.OutcomeSynced {
		t.Fatalf("sync w/b:1: %+v %v", rep, err)
	}
	same(t, "repositories", e.repos(), []string{"w/a", "w/b"})
	if _, err := s.SyncTag(context.Background(), testRegistry, "wild-rule", "1"); err == nil {
		t.Fatal("a bare tag on a wildcard rule was accepted")
	}
}

// TestGoodCitizen: a 429 with a long Retry-After, and a nearly spent
// rate-limit budget, defer the run instead of hammering the upstream.
func TestGoodCitizen(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	pushImage(t, up, "polite", "v1", amd64, 800)
	pushImage(t, up, "polite", "v2", amd64, 801)
	proxy := upstreamreg.NewFaultProxy(t, up)
	e := newEnv(t, proxy.Host())
	s, _ := e.newSyncer(syncer.Options{MinRateLimitRemaining: 5})
	e.putRule(rules.Rule{Name: "polite-rule", Source: proxy.Host() + "/polite", Target: "polite"})

	// The client waits out Retry-Afters up to 1s itself; a longer one comes
	// back to the syncer, which holds the host back and defers the run.
	proxy.TooManyRequests(1000, "3")
	st := e.syncRule(s, "polite-rule")
	if st.Result != syncer.ResultDeferred || time.Until(st.NextAt.Time) < 50*time.Second || st.TagsFailed != 0 {
		t.Fatalf("after 429: %+v", st)
	}
	if n := proxy.Requests("", "/v2/polite/"); n > 2 {
		t.Fatalf("%d requests, want the tags listing (and the client's one retry)", n)
	}

	proxy.Reset()
	proxy.SetHeader("ratelimit-limit", "100;w=21600")
	proxy.SetHeader("ratelimit-remaining", "3;w=21600")
	start := time.Now()
	st = e.syncRule(s, "polite-rule")
	if waited := time.Since(start); waited < 2*time.Second {
		t.Fatalf("the next run went to the host %s after its Retry-After 3", waited)
	}
	if st.Result != syncer.ResultDeferred || time.Until(st.NextAt.Time) < 5*time.Hour || st.TagsSynced != 0 {
		t.Fatalf("low budget: %+v", st)
	}
	if n := proxy.Requests(http.MethodGet, "/blobs/"); n != 0 {
		t.Fatalf("%d blob GETs with the budget spent", n)
	}

	proxy.SetHeader("ratelimit-remaining", "90;w=21600")
	st = e.syncRule(s, "polite-rule")
	if st.Result != syncer.ResultSucceeded || st.TagsSynced != 2 {
		t.Fatalf("budget back: %+v", st)
	}
}

// TestTriggerWakesScheduler: with a poll interval of an hour, Trigger is
// what starts the run of a new rule (rule "" form, as the management API's
// per-registry hook sends) and of a changed one.
func TestTriggerWakesScheduler(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	pushImage(t, up, "trig", "t1", amd64, 600)
	pushImage(t, up, "trig", "u1", amd64, 601)
	e := newEnv(t, up.Host)
	s, m := e.newSyncer(syncer.Options{Poll: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	rule := rules.Rule{Name: "trig-rule", Source: up.Host + "/trig", Target: "trig", Filters: rules.Filters{Tags: "Tags | where Name startswith 't'"}}
	time.Sleep(50 * time.Millisecond) // Run's first look finds nothing
	e.putRule(rule)
	s.Trigger(testRegistry, "")
	waitFor(t, func() bool { return counter(t, m, "arca_sync_runs_total", "result", syncer.ResultSucceeded) == 1 })
	same(t, "tags", e.tags("trig"), []string{"t1"})

	rule.Filters.Tags = "Tags | where Name startswith 'u'"
	e.putRule(rule)
	s.Trigger(testRegistry, rule.Name)
	waitFor(t, func() bool { return counter(t, m, "arca_sync_runs_total", "result", syncer.ResultSucceeded) == 2 })
	same(t, "tags (deleted from the filter, kept)", e.tags("trig"), []string{"t1", "u1"})
}
