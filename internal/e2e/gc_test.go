package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// gcResult is what `arca gc` prints.
type gcResult struct {
	Phase       string   `json:"phase"`
	DryRun      bool     `json:"dryRun"`
	Registry    string   `json:"registry"`
	Manifests   int64    `json:"manifests"`
	Uploads     int64    `json:"uploads"`
	UploadParts int64    `json:"uploadParts"`
	Store       *gcStore `json:"store"`
}

// gcStore is the store-wide part of what `arca gc` prints.
type gcStore struct {
	Blobs      int64 `json:"blobs"`
	BlobBytes  int64 `json:"blobBytes"`
	Orphans    int64 `json:"orphans"`
	Marked     int64 `json:"marked"`
	StrayParts int64 `json:"strayParts"`
}

// gcNow runs `arca gc -r default` with the admin token (store-wide
// authority), waiting out a run the schedule holds.
func (a *arca) gcNow(t testing.TB, extra ...string) gcResult {
	t.Helper()
	r := a.gcOf(t, "default", extra...)
	if r.Store == nil {
		t.Fatalf("arca gc with the admin token printed no store-wide part: %+v", r)
	}
	return r
}

// gcOf runs `arca gc -r reg` with extra arguments, waiting out a run the
// schedule holds.
func (a *arca) gcOf(t testing.TB, reg string, extra ...string) gcResult {
	t.Helper()
	for end := time.Now().Add(time.Minute); ; {
		out, err := a.tryCLI(append([]string{"gc", "-r", reg}, extra...)...)
		if err != nil && strings.Contains(out, "GarbageCollectionInProgress") && time.Now().Before(end) {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("arca gc: %v\n%s", err, out)
		}
		var r gcResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("arca gc printed %q: %v", out, err)
		}
		return r
	}
}

// request sends one request (safe from any goroutine) and drains the body.
func request(ctx context.Context, method, u string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", mtAcceptAll)
	resp, err := httpc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// TestGCStress runs pushes (of the same contents again and again, so GC
// deletes what is being pushed again), cross-repository mounts, pulls,
// cold fetches from a real upstream of contents GC is deleting, and
// garbage collection (scheduled every 200ms, and `arca gc` on demand)
// together for a bounded time. Afterwards every image that was kept is
// pulled byte for byte with crane, and once the grace period has passed
// no unreferenced blob is left.
func TestGCStress(t *testing.T) {
	// Longer than a push takes from prepare to link on a loaded 2-core
	// machine (as --gc-grace must be), short enough that a pool image's
	// blobs outlive it between two pushes of that image.
	const grace = 2 * time.Second
	up := upstreamreg.Start(t, upstreamreg.Options{})
	a := startCachingArca(t, []string{up.Host}, nil, "--gc-interval", "200ms", "--gc-grace", grace.String())
	a.cacheRule(t, "library", up.Host+"/library/*", "lib/*")
	c := crane(t)

	// A pool of images pushed to scratch repositories and deleted there
	// over and over (garbage, deleted while pushed again), and the
	// upstream's images, fetched cold under ever new names; every sixth
	// cold fetch is of a pool image, whose blobs may be being deleted.
	pool := make([]*testImage, 36)
	layouts := make([]string, len(pool))
	for i := range pool {
		pool[i] = newImage(t, uint64(7000+i), "amd64", 2<<10, 64<<10)
		layouts[i] = pool[i].writeLayout(t)
	}
	upImages := make([]*testImage, 6)
	for i := range upImages {
		upImages[i] = newImage(t, uint64(7200+i), "amd64", 2<<10, 64<<10)
	}
	// Kept images: pushed once and mounted into other repositories.
	kept := map[string]*testImage{}
	var keptMu sync.Mutex
	keep := func(ref string, im *testImage) { keptMu.Lock(); kept[ref] = im; keptMu.Unlock() }
	base := newImage(t, 7100, "amd64", 4<<10, 128<<10)
	c.crane("push", base.writeLayout(t), a.Ref("keep/base:v1"))
	keep("keep/base:v1", base)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var pushes, deletes, mounts, pulls, colds, gcs atomic.Int64
	fail := func(format string, args ...any) {
		if ctx.Err() == nil {
			t.Errorf(format, args...)
		}
	}
	// Pushers: push a pool image to a scratch repository, then delete its
	// manifest and blobs there (garbage once no other repository links it).
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				im := pool[(w*3+i)%len(pool)]
				repo := fmt.Sprintf("scratch/w%d", w)
				if _, err := c.tryCtx(ctx, "push", layouts[(w*3+i)%len(pool)], a.Ref(repo+":t")); err != nil {
					fail("push %s: %v", repo, err)
					return
				}
				pushes.Add(1)
				for _, u := range append([]string{a.URL() + "/v2/" + repo + "/manifests/" + im.Digest()}, blobURLs(a, repo, im)...) {
					if st, err := request(ctx, http.MethodDelete, u); err != nil || (st != http.StatusAccepted && st != http.StatusNotFound) {
						fail("DELETE %s: %d %v", u, st, err)
						return
					}
				}
				deletes.Add(1)
			}
		}()
	}
	// Mounts: crane copy within the registry mounts the base's blobs.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			ref := fmt.Sprintf("keep/mount%d:v1", i)
			if _, err := c.tryCtx(ctx, "copy", a.Ref("keep/base:v1"), a.Ref(ref)); err != nil {
				fail("copy to %s: %v", ref, err)
				return
			}
			keep(ref, base)
			mounts.Add(1)
			time.Sleep(300 * time.Millisecond)
		}
	}()
	// Pulls of kept images and cold fetches of the upstream's images
	// (each cached repository's first pull is cold; its blobs may be
	// stored already, or being deleted, from the scratch pushes).
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			im, name := upImages[i%len(upImages)], fmt.Sprintf("up%d", i)
			if i%6 == 5 {
				im, name = pool[(i/6)%len(pool)], fmt.Sprintf("pool%d", i)
			}
			seedImage(t, up, "library/"+name, "v1", im)
			repo := "lib/" + name
			if _, err := fetchVerified(a.URL()+"/v2/"+repo+"/manifests/v1", im.Digest()); err != nil {
				fail("cold manifest %s: %v", repo, err)
				return
			}
			for _, b := range im.blobs() {
				if _, err := fetchVerified(a.URL()+"/v2/"+repo+"/blobs/"+sha(b), sha(b)); err != nil {
					fail("cold blob %s: %v", repo, err)
					return
				}
			}
			keep(repo+":v1", im)
			colds.Add(1)
			keptMu.Lock()
			var refs []string
			for ref := range kept {
				refs = append(refs, ref)
			}
			keptMu.Unlock()
			for _, ref := range refs {
				keptMu.Lock()
				kim := kept[ref]
				keptMu.Unlock()
				repo, _, _ := strings.Cut(ref, ":")
				for _, b := range kim.blobs() {
					if _, err := fetchVerified(a.URL()+"/v2/"+repo+"/blobs/"+sha(b), sha(b)); err != nil {
						fail("pull %s: %v", ref, err)
						return
					}
				}
				pulls.Add(1)
			}
		}
	}()
	// On-demand runs between the scheduled ones.
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			out, err := a.tryCLI("gc", "-r", "default")
			if err != nil && !strings.Contains(out, "GarbageCollectionInProgress") {
				fail("arca gc: %v\n%s", err, out)
				return
			}
			gcs.Add(1)
			time.Sleep(time.Second)
		}
	}()
	wg.Wait()
	t.Logf("%d pushes, %d deletes, %d mounts, %d cold fetches, %d pulls of kept images, %d on-demand GC calls", pushes.Load(), deletes.Load(), mounts.Load(), colds.Load(), pulls.Load(), gcs.Load())
	if t.Failed() {
		t.FailNow()
	}

	// Every kept image, byte for byte, with a real client.
	for ref, im := range kept {
		out := filepath.Join(t.TempDir(), "pulled")
		c.crane("pull", "--format", "oci", a.Ref(ref), out)
		checkLayoutHas(t, out, im)
	}
	reclaimed := a.metric(t, "arca_gc_reclaimed_bytes_total")
	deleted := a.metric(t, "arca_gc_deleted_total", `kind="blob"`)
	t.Logf("during the run: %d blobs (%.0f bytes) reclaimed, %.0f scheduled+on-demand successful runs", int64(deleted), reclaimed, a.metric(t, "arca_gc_runs_total", `result="success"`))
	if deleted == 0 {
		t.Fatal("GC deleted nothing during the stress run: the races were not exercised")
	}
	// After the grace period: nothing unreferenced is left.
	time.Sleep(grace + time.Second)
	a.gcNow(t)
	time.Sleep(grace + time.Second)
	a.gcNow(t)
	if r := a.gcNow(t, "--dry-run"); r.Store.Blobs != 0 || r.Store.Marked != 0 || r.Store.Orphans != 0 {
		t.Fatalf("after the grace period a dry run still finds %+v", r)
	}
	for ref, im := range kept {
		repo, _, _ := strings.Cut(ref, ":")
		for _, b := range im.blobs() {
			a.checkBlob(t, repo, b)
		}
	}
}

func blobURLs(a *arca, repo string, im *testImage) []string {
	var out []string
	for _, b := range im.blobs() {
		out = append(out, a.URL()+"/v2/"+repo+"/blobs/"+sha(b))
	}
	return out
}

// garbage pushes n small blobs to repo (monolithic uploads, 8 at a time)
// and deletes them there: n unreferenced blobs.
func garbage(t testing.TB, a *arca, repo string, seed, n int) int64 {
	t.Helper()
	var wg sync.WaitGroup
	var bytes atomic.Int64
	errs := make(chan error, n)
	work := make(chan int)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				b := []byte(fmt.Sprintf("garbage %d/%d %s", seed, i, strings.Repeat("g", i%512)))
				d := sha(b)
				req, _ := http.NewRequest(http.MethodPost, a.URL()+"/v2/"+repo+"/blobs/uploads/?digest="+d, strings.NewReader(string(b)))
				req.Header.Set("Content-Type", "application/octet-stream")
				resp, err := httpc.Do(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusCreated {
						err = fmt.Errorf("upload: %s", resp.Status)
					}
				}
				if err == nil {
					var st int
					if st, err = request(context.Background(), http.MethodDelete, a.URL()+"/v2/"+repo+"/blobs/"+d); err == nil && st != http.StatusAccepted {
						err = fmt.Errorf("delete: %d", st)
					}
				}
				if err != nil {
					errs <- err
					continue
				}
				bytes.Add(int64(len(b)))
			}
		}()
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	return bytes.Load()
}

// TestGCCrashMidSweep kills arca with SIGKILL while `arca gc` deletes
// thousands of garbage blobs, restarts it on the same stores and checks
// that every kept image is intact and a new run finishes what the killed
// one claimed, leaving no garbage.
func TestGCCrashMidSweep(t *testing.T) {
	const grace = time.Second
	args := []string{"--gc-interval", "0", "--gc-grace", grace.String()}
	a := startCachingArca(t, nil, nil, args...)
	restart := func() {
		a.Kill9()
		a = &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Addr: a.Addr, DataDir: a.DataDir, Args: args,
			Env: []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}})}
	}
	c := crane(t)
	im := newImage(t, 8100, "amd64", 4<<10, 256<<10)
	c.crane("push", im.writeLayout(t), a.Ref("keep/app:v1"))
	c.crane("copy", a.Ref("keep/app:v1"), a.Ref("keep/mounted:v1"))
	checkKept := func() {
		t.Helper()
		for _, ref := range []string{"keep/app:v1", "keep/mounted:v1"} {
			out := filepath.Join(t.TempDir(), "pulled")
			c.crane("pull", "--format", "oci", a.Ref(ref), out)
			checkLayoutHas(t, out, im)
		}
	}
	const n = 3000
	midway := false
	for round := 0; round < 3 && !midway; round++ {
		total := a.gcNow(t, "--dry-run")
		if total.Store.Blobs == 0 {
			garbage(t, a, "scratch/crash", round, n)
			if r := a.gcNow(t); r.Store.Marked < n {
				t.Fatalf("marking run: %+v, want at least %d marked", r, n)
			}
			time.Sleep(grace + 100*time.Millisecond)
			total = a.gcNow(t, "--dry-run")
		}
		if total.Store.Blobs < n {
			t.Fatalf("round %d: a dry run finds %+v, want at least %d blobs to delete", round, total, n)
		}
		// The sweep, killed once it deleted some bytes and before it ends.
		blobs := testBackend(t, a)
		before := countBlobs(t, blobs)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = a.tryCLI("gc", "-r", "default")
		}()
		for countBlobs(t, blobs) > before-100 {
			select {
			case <-done:
			case <-time.After(5 * time.Millisecond):
				continue
			}
			break
		}
		restart()
		<-done
		left := a.gcNow(t, "--dry-run")
		t.Logf("round %d: killed a sweep of %d blobs (%d stored before it, %d after); %d left to delete", round, total.Store.Blobs, before, countBlobs(t, blobs), left.Store.Blobs)
		checkKept()
		if left.Store.Blobs == 0 {
			continue // the sweep ended before the kill: again
		}
		midway = true
		// The next run resumes: deletes what is left, claimed or not.
		if r := a.gcNow(t); r.Store.Blobs != left.Store.Blobs {
			t.Fatalf("resumed run deleted %d blobs, want the %d left", r.Store.Blobs, left.Store.Blobs)
		}
		if r := a.gcNow(t, "--dry-run"); r.Store.Blobs != 0 || r.Store.Marked != 0 || r.Store.Orphans != 0 {
			t.Fatalf("after the resumed run: %+v, want nothing", r)
		}
	}
	if !midway {
		t.Fatal("never killed arca in the middle of a sweep")
	}
	checkKept()
}

// testBackend opens the blob store of a (filesystem or, with
// ARCA_TEST_BLOBS=s3, its bucket) from the test.
func testBackend(t *testing.T, a *arca) blobstore.Backend {
	t.Helper()
	spec := ""
	if len(a.BlobArgs) == 2 {
		spec = a.BlobArgs[1]
		for _, kv := range a.BlobEnv {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
	}
	b, err := blobstore.Open(context.Background(), spec, filepath.Join(a.DataDir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func countBlobs(t *testing.T, b blobstore.Backend) int {
	t.Helper()
	n := 0
	if err := b.List(context.Background(), func(digest.Digest, int64) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGCRetentionUntaggedManifests: `arca config retention update|show`
// as az acr config retention, then `arca gc` deletes untagged manifests
// (not tagged ones, not an index's children, not referrers of a kept
// image) only while the policy is enabled.
func TestGCRetentionUntaggedManifests(t *testing.T) {
	a := startCachingArca(t, nil, nil, "--gc-interval", "0", "--gc-grace", "1s")
	tagged := newImage(t, 8200, "amd64", 1<<10)
	untagged := newImage(t, 8201, "amd64", 1<<10)
	child := newImage(t, 8202, "arm64", 1<<10)
	a.pushImage(t, "app", "v1", tagged)
	a.pushImage(t, "app", untagged.Digest(), untagged) // by digest: never tagged
	a.pushImage(t, "app", child.Digest(), child)
	idx := mustJSON(t, manifest{SchemaVersion: 2, MediaType: mtOCIIndex, Manifests: []descriptor{child.ManifestDesc}})
	if r := a.pushManifest(t, "app", "multi", mtOCIIndex, idx); r.Status != http.StatusCreated {
		t.Fatalf("push index: %s", r)
	}
	// Untag the index: it and then its child become eligible.
	if st, err := request(context.Background(), http.MethodDelete, a.URL()+"/v2/app/manifests/multi"); err != nil || st != http.StatusAccepted {
		t.Fatalf("DELETE tag: %d %v", st, err)
	}
	// A referrer of the tagged image (a signature), untagged like all.
	empty := []byte("{}")
	a.pushBlob(t, "app", empty)
	sig := mustJSON(t, manifest{SchemaVersion: 2, MediaType: mtOCIManifest, ArtifactType: "application/vnd.example.sig",
		Config:  &descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: sha(empty), Size: 2},
		Layers:  []descriptor{{MediaType: "application/vnd.oci.empty.v1+json", Digest: sha(empty), Size: 2}},
		Subject: &tagged.ManifestDesc})
	if r := a.pushManifest(t, "app", sha(sig), mtOCIManifest, sig); r.Status != http.StatusCreated {
		t.Fatalf("push referrer: %s", r)
	}

	show := func() map[string]any {
		var p map[string]any
		if err := json.Unmarshal([]byte(a.cli(t, "config", "retention", "show", "-r", "default")), &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	if p := show(); p["status"] != "disabled" || p["days"] != float64(7) {
		t.Fatalf("default policy: %v", p)
	}
	if r := a.gcNow(t); r.Manifests != 0 {
		t.Fatalf("policy off: %+v", r)
	}
	if out, err := a.tryCLI("config", "retention", "update", "-r", "default", "--status", "enabled", "--days", "400", "--type", "UntaggedManifests"); err == nil || !strings.Contains(out, "InvalidRetentionDays") {
		t.Fatalf("--days 400: %v %s", err, out)
	}
	a.cli(t, "config", "retention", "update", "-r", "default", "--status", "enabled", "--days", "0", "--type", "UntaggedManifests")
	if p := show(); p["status"] != "enabled" || p["days"] != float64(0) {
		t.Fatalf("after update: %v", p)
	}
	dry := a.gcNow(t, "--dry-run")
	r := a.gcNow(t)
	// A dry run sees one pass: the untagged image and index; the run
	// deletes the index's child too, in its next pass.
	if dry.Manifests != 2 || r.Manifests != 3 {
		t.Fatalf("gc with the policy: %+v (dry run %+v), want 3 (dry run 2) manifests deleted", r, dry)
	}
	for _, d := range []string{untagged.Digest(), sha(idx)} {
		if st, _ := request(context.Background(), http.MethodGet, a.URL()+"/v2/app/manifests/"+d); st != http.StatusNotFound {
			t.Errorf("untagged manifest %s: %d, want 404", d, st)
		}
	}
	for _, d := range []string{tagged.Digest(), sha(sig)} {
		if st, _ := request(context.Background(), http.MethodGet, a.URL()+"/v2/app/manifests/"+d); st != http.StatusOK {
			t.Errorf("kept manifest %s: %d, want 200", d, st)
		}
	}
	// The index's child is eligible once the index is gone (the next pass
	// of the same run deleted it).
	if st, _ := request(context.Background(), http.MethodGet, a.URL()+"/v2/app/manifests/"+child.Digest()); st != http.StatusNotFound {
		t.Errorf("child of a deleted index: %d, want 404", st)
	}
}
