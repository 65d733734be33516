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

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// gcResult is what `arca gc` prints.
type gcResult struct {
	DryRun      bool  `json:"dryRun"`
	Blobs       int64 `json:"blobs"`
	BlobBytes   int64 `json:"blobBytes"`
	Orphans     int64 `json:"orphans"`
	Manifests   int64 `json:"manifests"`
	Uploads     int64 `json:"uploads"`
	UploadParts int64 `json:"uploadParts"`
	Marked      int64 `json:"marked"`
}

// gcNow runs `arca gc -r default`, waiting out a run the schedule holds.
func (a *arca) gcNow(t testing.TB, extra ...string) gcResult {
	t.Helper()
	for end := time.Now().Add(time.Minute); ; {
		out, err := a.tryCLI(append([]string{"gc", "-r", "default"}, extra...)...)
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
	const grace = time.Second
	up := upstreamreg.Start(t, upstreamreg.Options{})
	a := startCachingArca(t, []string{up.Host}, nil, "--gc-interval", "200ms", "--gc-grace", grace.String())
	a.cacheRule(t, "library", up.Host+"/library/*", "lib/*")
	c := crane(t)

	// A pool of images pushed to scratch repositories and deleted there
	// over and over (garbage, deleted while pushed again), and the
	// upstream's images, fetched cold under ever new names; every sixth
	// cold fetch is of a pool image, whose blobs may be being deleted.
	pool := make([]*testImage, 12)
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
	if r := a.gcNow(t, "--dry-run"); r.Blobs != 0 || r.Marked != 0 || r.Orphans != 0 {
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
