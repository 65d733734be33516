package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Storage lifecycle end to end: the real binary, a real upstream, crane.

// imageBytes is what a repository holds for im: its manifest, config and layers.
func imageBytes(im *testImage) int64 {
	n := int64(len(im.Manifest))
	for _, b := range im.blobs() {
		n += int64(len(b))
	}
	return n
}

// usages runs `arca show-usage` and returns currentValue and limit by name.
func (a *arca) usages(t *testing.T) map[string][2]int64 {
	t.Helper()
	var out struct {
		Value []struct {
			Name         string `json:"name"`
			Limit        int64  `json:"limit"`
			CurrentValue int64  `json:"currentValue"`
			Unit         string `json:"unit"`
		} `json:"value"`
	}
	if err := json.Unmarshal([]byte(a.cli(t, "show-usage", "-n", "default")), &out); err != nil {
		t.Fatal(err)
	}
	m := map[string][2]int64{}
	for _, u := range out.Value {
		if u.Unit != "Bytes" {
			t.Errorf("usage %s in %q, want Bytes", u.Name, u.Unit)
		}
		m[u.Name] = [2]int64{u.CurrentValue, u.Limit}
	}
	return m
}

// cacheResult GETs a manifest and returns arca's X-Arca-Cache answer.
func cacheResult(t *testing.T, a *arca, repo, ref string) string {
	t.Helper()
	r := do(t, "GET", a.URL()+"/v2/"+repo+"/manifests/"+ref, map[string]string{"Accept": mtAcceptAll}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s:%s: %s", repo, ref, r)
	}
	return r.Header.Get("X-Arca-Cache")
}

// waitPulled waits until the repository API shows repo:tag pulled at or
// after since: pull times are written in batches (--pull-flush-interval),
// and a loaded machine may write a batch late.
func waitPulled(t *testing.T, a *arca, repo, tag string, since time.Time) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		r := do(t, "GET", a.URL()+"/acr/v1/"+repo+"/_tags/"+tag, nil, nil)
		var v struct {
			Tag struct {
				LastPulledTime string `json:"lastPulledTime"`
			} `json:"tag"`
		}
		if r.Status == http.StatusOK && json.Unmarshal(r.Body, &v) == nil {
			last = v.Tag.LastPulledTime
			// Stored in microseconds: since may be a fraction later.
			if at, err := time.Parse(time.RFC3339Nano, last); err == nil && !at.Before(since.Add(-time.Millisecond)) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s:%s: lastPulledTime %q 30s on, want one at or after %s (%s)", repo, tag, last, since.Format(time.RFC3339Nano), r)
		}
	}
}

// waitCachedSize waits until the cached usage is want: a fetch links a
// blob after its client has the bytes.
func waitCachedSize(t *testing.T, a *arca, want int64) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); a.usages(t)["CachedSize"][0] != want; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("cached usage %v after 30s, want %d", a.usages(t)["CachedSize"], want)
		}
	}
}

// Over the cache quota, eviction takes the least recently pulled cached
// image first and stops once usage is within the quota; pushed content
// stays. The evicted image is no longer served from the cache or counted,
// and a pull brings it back through the upstream.
func TestCacheQuotaEvictsLeastRecentlyPulled(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	ims := map[string]*testImage{}
	for i, name := range []string{"a", "b", "c"} {
		ims[name] = newImage(t, uint64(9100+i), "amd64", 300<<10, 40<<10)
		seedImage(t, up, "library/"+name, "v1", ims[name])
	}
	a := startCachingArca(t, []string{up.Host}, nil, "--eviction-interval", "1s", "--pull-flush-interval", "200ms",
		"--gc-interval", "0", "--gc-grace", "1s")
	a.cacheRule(t, "library", up.Host+"/library/*", "lib/*")
	c := crane(t)
	mine := newImage(t, 9200, "amd64", 500<<10)
	c.crane("push", mine.writeLayout(t), a.Ref("mine/app:v1"))

	pull := func(name string) {
		t.Helper()
		c.crane("pull", "--format", "oci", a.Ref("lib/"+name+":v1"), filepath.Join(t.TempDir(), name))
	}
	// Pulled in this order, a twice: b is the least recently pulled, then c.
	for _, name := range []string{"a", "b", "c"} {
		pull(name)
		time.Sleep(50 * time.Millisecond) // distinct pull times
	}
	pull("a")
	// Every pull time is written, and every fetched blob linked, before
	// the quota makes eviction pick: a pull after them (of the pushed
	// image, which eviction leaves alone) shows once they are written too
	// (a flush writes all that is pending).
	flushedAfter := time.Now()
	if r := do(t, "GET", a.URL()+"/v2/mine/app/manifests/v1", map[string]string{"Accept": mtAcceptAll}, nil); r.Status != http.StatusOK {
		t.Fatalf("pull of mine/app:v1: %s", r)
	}
	waitPulled(t, a, "mine/app", "v1", flushedAfter)
	want := imageBytes(ims["a"]) + imageBytes(ims["b"]) + imageBytes(ims["c"])
	waitCachedSize(t, a, want)

	u := a.usages(t)
	cached, pushed := u["CachedSize"][0], u["PushedSize"][0]
	if cached != want || pushed != imageBytes(mine) || u["CachedSize/library"][0] != want || u["Size"][0] != want+pushed {
		t.Fatalf("usage %v; want cached %d, pushed %d", u, want, imageBytes(mine))
	}
	quota := cached - imageBytes(ims["b"])
	a.cli(t, "update", "-n", "default", "--cache-quota", strconv.FormatInt(quota, 10), "-o", "none")

	deadline := time.Now().Add(30 * time.Second)
	for {
		u = a.usages(t)
		if u["CachedSize"][0] <= quota {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cached usage still %d, over the quota %d, after 30s", u["CachedSize"][0], quota)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if u["CachedSize"][0] != quota || u["CachedSize"][1] != quota || u["PushedSize"][0] != pushed {
		t.Fatalf("after eviction: %v; want cached exactly %d (only b evicted) against limit %d, pushed %d", u, quota, quota, pushed)
	}
	if v := a.metric(t, "arca_evicted_items_total", `reason="quota"`, `kind="manifest"`); v != 1 {
		t.Errorf("arca_evicted_items_total{quota,manifest} = %v, want 1", v)
	}
	if v := a.metric(t, "arca_storage_pushed_bytes", `registry="default"`); v != float64(pushed) {
		t.Errorf("arca_storage_pushed_bytes = %v, want %d", v, pushed)
	}
	// Garbage collection reclaims exactly b's bytes (marked by one run,
	// deleted by one after the grace period).
	first := a.gcNow(t)
	time.Sleep(1100 * time.Millisecond)
	second := a.gcNow(t)
	if got := first.Store.BlobBytes + second.Store.BlobBytes; got != imageBytes(ims["b"]) {
		t.Errorf("gc after eviction reclaimed %d bytes (runs %+v, %+v), want b's %d", got, first, second, imageBytes(ims["b"]))
	}
	// a and c are still served from the cache; b comes from the upstream
	// again; the pushed image is intact.
	for name, res := range map[string]string{"a": "hit", "c": "hit"} {
		if got := cacheResult(t, a, "lib/"+name, "v1"); got != res {
			t.Errorf("lib/%s:v1 after eviction: %q, want %q", name, got, res)
		}
	}
	before := upstreamGETs(up, "/library/b/manifests/")
	if got := cacheResult(t, a, "lib/b", "v1"); got != "miss" {
		t.Errorf("evicted lib/b:v1: %q, want a miss", got)
	}
	if upstreamGETs(up, "/library/b/manifests/") != before+1 {
		t.Error("the evicted manifest was not fetched from the upstream again")
	}
	out := filepath.Join(t.TempDir(), "b-again")
	c.crane("pull", "--format", "oci", a.Ref("lib/b:v1"), out)
	c.crane("validate", "--remote", a.Ref("lib/b:v1"))
	c.crane("validate", "--remote", a.Ref("mine/app:v1"))
	if got := c.crane("digest", a.Ref("mine/app:v1")); got != mine.Digest() {
		t.Errorf("pushed image digest %s, want %s", got, mine.Digest())
	}
}

// A push that would exceed the storage quota is refused with DENIED
// before its bytes are taken, and stores nothing; cached content does not
// count against it. (OCI pushes blob by blob: a blob that fits on its own
// is accepted, so an image over the quota is refused at its first blob
// that does not fit; at the quota, at its first.)
func TestStorageQuotaRefusesPush(t *testing.T) {
	a := startCachingArca(t, nil, nil)
	c := crane(t)
	small := newImage(t, 9300, "amd64", 100<<10)
	c.crane("push", small.writeLayout(t), a.Ref("mine/small:v1"))
	used := imageBytes(small)
	a.cli(t, "update", "-n", "default", "--storage-quota", strconv.FormatInt(used, 10), "-o", "none")
	if u := a.usages(t); u["PushedSize"] != [2]int64{used, used} {
		t.Fatalf("PushedSize %v, want [%d %d]", u["PushedSize"], used, used)
	}
	big := newImage(t, 9301, "amd64", 300<<10)
	nothingStored := func() {
		t.Helper()
		if u := a.usages(t); u["PushedSize"][0] != used {
			t.Errorf("PushedSize %d after a refused push, want %d", u["PushedSize"][0], used)
		}
		for _, b := range big.blobs() {
			if r := do(t, "HEAD", a.URL()+"/v2/mine/big/blobs/"+sha(b), nil, nil); r.Status != http.StatusNotFound {
				t.Errorf("blob %s of the refused push: HEAD %d, want 404", sha(b), r.Status)
			}
		}
		if r := do(t, "GET", a.URL()+"/v2/mine/big/manifests/v1", nil, nil); r.Status != http.StatusNotFound {
			t.Errorf("manifest of the refused push: %d, want 404", r.Status)
		}
	}
	out, err := c.try("--insecure", "push", big.writeLayout(t), a.Ref("mine/big:v1"))
	if err == nil {
		t.Fatalf("push at the storage quota succeeded:\n%s", out)
	}
	if !strings.Contains(out, "DENIED") || !strings.Contains(out, "storage quota") {
		t.Errorf("crane's error does not carry DENIED and the reason:\n%s", out)
	}
	nothingStored()

	// With room for 200 KiB: a request whose size is known is refused
	// before its body is taken.
	quota := used + 200<<10
	a.cli(t, "update", "-n", "default", "--storage-quota", strconv.FormatInt(quota, 10), "-o", "none")
	layer := big.blobs()[len(big.blobs())-1]
	if len(layer) <= 200<<10 {
		t.Fatalf("layer of %d bytes fits the quota", len(layer))
	}
	denied := func(r rawResp, what string) {
		t.Helper()
		if r.Status != http.StatusForbidden || !strings.Contains(string(r.Body), `"DENIED"`) {
			t.Errorf("%s: %s, want 403 DENIED", what, r)
		}
	}
	// Monolithic POST with ?digest and its Content-Length.
	denied(do(t, "POST", a.URL()+"/v2/mine/big/blobs/uploads/?digest="+sha(layer), map[string]string{"Content-Type": "application/octet-stream"}, layer), "POST ?digest")
	// A session whose PATCH would go over: refused, and the session is gone.
	r := do(t, "POST", a.URL()+"/v2/mine/big/blobs/uploads/", nil, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("start upload: %s", r)
	}
	loc := a.URL() + r.Header.Get("Location")
	denied(do(t, "PATCH", loc, map[string]string{"Content-Type": "application/octet-stream",
		"Content-Range": fmt.Sprintf("0-%d", len(layer)-1)}, layer), "PATCH")
	if r := do(t, "GET", loc, nil, nil); r.Status != http.StatusNotFound {
		t.Errorf("the refused session: GET %s, want 404 (deleted)", r)
	}
	nothingStored()
	// A blob that fits still goes in, and counts.
	fits := randomBytes(9302, 100<<10)
	if r := do(t, "POST", a.URL()+"/v2/mine/small/blobs/uploads/?digest="+sha(fits), map[string]string{"Content-Type": "application/octet-stream"}, fits); r.Status != http.StatusCreated {
		t.Fatalf("a blob within the quota: %s", r)
	}
	if u := a.usages(t); u["PushedSize"][0] != used+int64(len(fits)) {
		t.Errorf("PushedSize %d, want %d", u["PushedSize"][0], used+int64(len(fits)))
	}
}

// `arca cache purge` evicts a rule's cached content (dry run: reports and
// keeps it); garbage collection then reclaims its bytes, and the next pull
// fetches it again.
func TestCachePurge(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 9400, "amd64", 200<<10)
	seedImage(t, up, "library/app", "v1", im)
	a := startCachingArca(t, []string{up.Host}, nil, "--gc-interval", "0", "--gc-grace", "1s")
	a.cacheRule(t, "library", up.Host+"/library/*", "lib/*")
	c := crane(t)
	c.crane("pull", "--format", "oci", a.Ref("lib/app:v1"), filepath.Join(t.TempDir(), "app"))
	waitCachedSize(t, a, imageBytes(im))

	var dry struct {
		DryRun    bool  `json:"dryRun"`
		Manifests int   `json:"manifests"`
		Bytes     int64 `json:"bytes"`
		Items     []struct {
			Repository, Kind, Digest string
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(a.cli(t, "cache", "purge", "-r", "default", "-n", "library", "--dry-run")), &dry); err != nil {
		t.Fatal(err)
	}
	if !dry.DryRun || dry.Manifests != 1 || dry.Bytes != imageBytes(im) || len(dry.Items) != 1 || dry.Items[0].Digest != im.Digest() {
		t.Fatalf("dry run: %+v; want the one manifest, %d bytes", dry, imageBytes(im))
	}
	if got := cacheResult(t, a, "lib/app", "v1"); got != "hit" {
		t.Fatalf("after a dry run: %q, want a hit", got)
	}
	a.cli(t, "cache", "purge", "-r", "default", "-n", "library", "--older-than", "1d")
	if got := cacheResult(t, a, "lib/app", "v1"); got != "hit" {
		t.Fatalf("purge --older-than 1d took content pulled just now: %q", got)
	}
	a.cli(t, "cache", "purge", "-r", "default", "-n", "library")
	if u := a.usages(t); u["CachedSize"][0] != 0 {
		t.Errorf("CachedSize %d after the purge, want 0", u["CachedSize"][0])
	}
	// Garbage collection reclaims every byte the purge unlinked: the
	// manifest, config and layer (a run marks them, one after the grace
	// period deletes them).
	var reclaimed, blobs int64
	first := a.gcNow(t)
	time.Sleep(1100 * time.Millisecond)
	second := a.gcNow(t)
	for _, r := range []gcResult{first, second} {
		reclaimed, blobs = reclaimed+r.Store.BlobBytes, blobs+r.Store.Blobs
	}
	if reclaimed != imageBytes(im) || blobs != int64(len(im.blobs())+1) {
		t.Errorf("gc after the purge reclaimed %d bytes in %d blobs (runs %+v, %+v); want %d bytes in %d", reclaimed, blobs, first, second, imageBytes(im), len(im.blobs())+1)
	}
	if got := cacheResult(t, a, "lib/app", "v1"); got != "miss" {
		t.Errorf("after the purge: %q, want a miss", got)
	}
	c.crane("validate", "--remote", a.Ref("lib/app:v1"))
	if out, err := a.tryCLI("cache", "purge", "-r", "default", "-n", "nosuchrule"); err == nil || !strings.Contains(out, "not") {
		t.Errorf("purge of a missing rule: %v\n%s", err, out)
	}
	if out, err := a.tryCLI("cache", "purge", "-r", "default", "-n", "library", "--older-than", "-3d"); err == nil {
		t.Errorf("negative --older-than accepted:\n%s", out)
	}
}

// Eviction never breaks a pull in progress: with a cache quota far below
// what the pulls need, eviction runs every second while clients pull the
// same images over and over; every pull gets every byte right (what was
// evicted under it is fetched through again).
func TestEvictionDuringPulls(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	var ims []*testImage
	for i := range 3 {
		im := newImage(t, uint64(9500+i), "amd64", 400<<10, 100<<10)
		seedImage(t, up, fmt.Sprintf("library/img%d", i), "v1", im)
		ims = append(ims, im)
	}
	a := startCachingArca(t, []string{up.Host}, nil, "--eviction-interval", "1s", "--pull-flush-interval", "100ms")
	a.cacheRule(t, "library", up.Host+"/library/*", "lib/*")
	a.cli(t, "update", "-n", "default", "--cache-quota", "1", "-o", "none")
	deadline := time.Now().Add(6 * time.Second)
	errs := make(chan error, len(ims))
	pulls := make([]int, len(ims))
	for i, im := range ims {
		go func() {
			c := crane(t)
			for time.Now().Before(deadline) {
				dir := filepath.Join(t.TempDir(), "p")
				ref := a.Ref(fmt.Sprintf("lib/img%d:v1", i))
				if out, err := c.try("--insecure", "pull", "--format", "oci", ref, dir); err != nil {
					errs <- fmt.Errorf("pull %s: %v\n%s", ref, err, out)
					return
				}
				checkLayoutHas(t, dir, im)
				pulls[i]++
			}
			errs <- nil
		}()
	}
	for range ims {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	evicted := a.metric(t, "arca_evicted_items_total", `reason="quota"`)
	t.Logf("pulls per image %v; evicted items %v", pulls, evicted)
	if evicted == 0 {
		t.Error("nothing was evicted while pulls ran: the test did not race eviction")
	}
}
