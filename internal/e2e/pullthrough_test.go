package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Pull-through end to end: the real arca binary between real clients and a
// real upstream (Debian's docker-registry), rules created with the real CLI.

// ptImages is what seedPullThrough puts in the upstream.
type ptImages struct {
	app      *testImage // library/app:v1, a few MiB in three layers
	amd, arm *testImage // the children of library/multi:latest
	index    []byte     // library/multi:latest
	special  *testImage // other/special:v1, for a static rule
}

func seedPullThrough(t testing.TB, up *upstreamreg.Registry, seed uint64) *ptImages {
	t.Helper()
	p := &ptImages{
		app:     newImage(t, seed, "amd64", 3<<20, 1<<20+17, 64<<10),
		amd:     newImage(t, seed+1, "amd64", 2<<20),
		arm:     newImage(t, seed+2, "arm64", 1<<20+5),
		special: newImage(t, seed+3, "amd64", 200<<10),
	}
	seedImage(t, up, "library/app", "v1", p.app)
	p.index = seedIndex(t, up, "library/multi", "latest", p.amd, p.arm)
	seedImage(t, up, "other/special", "v1", p.special)
	return p
}

// startPullThrough starts an upstream seeded with ptImages and an arca with
// a wildcard rule library/* => lib/* and a static rule other/special =>
// lib/special (inside the wildcard's target space: the static rule wins).
func startPullThrough(t testing.TB, seed uint64, extra ...string) (*upstreamreg.Registry, *arca, *ptImages) {
	t.Helper()
	up := upstreamreg.Start(t, upstreamreg.Options{})
	imgs := seedPullThrough(t, up, seed)
	a := startCachingArca(t, []string{up.Host}, nil, extra...)
	a.cacheRule(t, "library-wild", up.Host+"/library/*", "lib/*")
	a.cacheRule(t, "special-static", up.Host+"/other/special", "lib/special")
	return up, a, imgs
}

// checkWarm asserts that what ran in pull caused no manifest or blob
// request upstream and only cache hits in arca.
func checkWarm(t *testing.T, up *upstreamreg.Registry, a *arca, client string, pull func()) {
	t.Helper()
	before, res0 := upstreamContentRequests(up), a.cacheResults(t)
	pull()
	after, res1 := upstreamContentRequests(up), a.cacheResults(t)
	if after != before {
		t.Errorf("%s: second pull made %d manifest/blob requests upstream, want 0", client, after-before)
	}
	if res1["hit"] <= res0["hit"] || res1["miss"] != res0["miss"] {
		t.Errorf("%s: second pull: cache results before %v, after %v; want only hits", client, res0, res1)
	}
}

func TestPullThroughCrane(t *testing.T) {
	up, a, imgs := startPullThrough(t, 100)
	c := crane(t)
	app, multi := a.Ref("lib/app:v1"), a.Ref("lib/multi:latest")

	if got := c.crane("digest", app); got != imgs.app.Digest() {
		t.Errorf("crane digest = %s, want upstream's %s", got, imgs.app.Digest())
	}
	if got := c.crane("manifest", app); got != string(imgs.app.Manifest) {
		t.Errorf("crane manifest differs from upstream's bytes")
	}
	pull := func(dir string) {
		c.crane("pull", "--format", "oci", app, filepath.Join(dir, "app"))
		checkLayoutHas(t, filepath.Join(dir, "app"), imgs.app)
		// crane pulls the whole index when no --platform is given.
		c.crane("pull", "--format", "oci", multi, filepath.Join(dir, "multi"))
		checkLayoutHas(t, filepath.Join(dir, "multi"), imgs.amd)
		checkLayoutHas(t, filepath.Join(dir, "multi"), imgs.arm)
	}
	pull(t.TempDir())
	if got := c.crane("manifest", multi); got != string(imgs.index) {
		t.Errorf("crane manifest of the index differs from upstream's bytes")
	}
	if got := c.crane("digest", "--platform", "linux/arm64", multi); got != imgs.arm.Digest() {
		t.Errorf("crane digest --platform linux/arm64 = %s, want %s", got, imgs.arm.Digest())
	}
	// The static rule wins over the wildcard covering lib/special.
	if got := c.crane("digest", a.Ref("lib/special:v1")); got != imgs.special.Digest() {
		t.Errorf("lib/special:v1 = %s, want other/special's %s (static rule)", got, imgs.special.Digest())
	}
	c.crane("validate", "--remote", app)

	// Every blob went upstream once; the second pull is served locally.
	for _, b := range append(imgs.app.blobs(), imgs.amd.blobs()...) {
		if n := upstreamGETs(up, "/blobs/"+sha(b)); n != 1 {
			t.Errorf("upstream GETs of blob %s = %d, want 1", sha(b), n)
		}
	}
	checkWarm(t, up, a, "crane", func() { pull(t.TempDir()) })
	for _, b := range imgs.app.blobs() {
		r := getCached(t, a.URL()+"/v2/lib/app/blobs/"+sha(b), sha(b))
		if h := r.Header.Get("X-Arca-Cache"); h != "hit" {
			t.Errorf("warm blob %s: X-Arca-Cache %q, want hit", sha(b), h)
		}
	}

	// Cached repositories show in the catalog and tag lists.
	repos := lines(c.crane("catalog", a.Addr))
	for _, want := range []string{"lib/app", "lib/multi", "lib/special"} {
		if !slices.Contains(repos, want) {
			t.Errorf("crane catalog = %v, missing %s", repos, want)
		}
	}
	if tags := lines(c.crane("ls", a.Ref("lib/app"))); !slices.Contains(tags, "v1") {
		t.Errorf("crane ls lib/app = %v, want v1", tags)
	}
	// Pushes into a cached repository are denied.
	out, err := c.try("--insecure", "push", newImage(t, 199, "amd64", 1<<10).writeLayout(t), a.Ref("lib/app:mine"))
	if err == nil || !strings.Contains(out, "DENIED") {
		t.Errorf("crane push into lib/app: err %v, output %s; want DENIED", err, out)
	}
}

func TestPullThroughSkopeo(t *testing.T) {
	up, a, imgs := startPullThrough(t, 110)
	s := skopeo(t)
	pull := func(dir string) {
		s.copy("docker://"+a.Ref("lib/app:v1"), "dir:"+filepath.Join(dir, "app"))
		checkDirHas(t, filepath.Join(dir, "app"), imgs.app)
		s.copy("--all", "docker://"+a.Ref("lib/multi:latest"), "oci:"+filepath.Join(dir, "multi")+":latest")
		checkLayoutHas(t, filepath.Join(dir, "multi"), imgs.amd)
		checkLayoutHas(t, filepath.Join(dir, "multi"), imgs.arm)
		idx := filepath.Join(dir, "multi", "blobs", "sha256", strings.TrimPrefix(sha(imgs.index), "sha256:"))
		if got := fileDigest(t, idx); got != sha(imgs.index) {
			t.Errorf("skopeo oci: index blob has digest %s, want upstream's %s", got, sha(imgs.index))
		}
	}
	pull(t.TempDir())
	var info struct{ Digest string }
	raw := s.skopeo("inspect", "--tls-verify=false", "docker://"+a.Ref("lib/app:v1"))
	if err := json.Unmarshal([]byte(raw), &info); err != nil || info.Digest != imgs.app.Digest() {
		t.Errorf("skopeo inspect: %s (%v), want digest %s", raw, err, imgs.app.Digest())
	}
	checkWarm(t, up, a, "skopeo", func() { pull(t.TempDir()) })
}

func TestPullThroughRegctl(t *testing.T) {
	up, a, imgs := startPullThrough(t, 120)
	c := regctl(t, a)
	app, multi := a.Ref("lib/app:v1"), a.Ref("lib/multi:latest")
	pull := func(dir string) {
		c.run("image", "copy", app, "ocidir://"+filepath.Join(dir, "app")+":v1")
		checkLayoutHas(t, filepath.Join(dir, "app"), imgs.app)
		c.run("image", "copy", multi, "ocidir://"+filepath.Join(dir, "multi")+":latest")
		checkLayoutHas(t, filepath.Join(dir, "multi"), imgs.amd)
		checkLayoutHas(t, filepath.Join(dir, "multi"), imgs.arm)
	}
	pull(t.TempDir())
	if got := c.run("manifest", "get", "--format", "raw-body", app); got != string(imgs.app.Manifest) {
		t.Errorf("regctl manifest get differs from upstream's bytes")
	}
	if got := c.run("manifest", "get", "--format", "raw-body", multi); got != string(imgs.index) {
		t.Errorf("regctl manifest get of the index differs from upstream's bytes")
	}
	if got := strings.TrimSpace(c.run("image", "digest", app)); got != imgs.app.Digest() {
		t.Errorf("regctl image digest = %s, want %s", got, imgs.app.Digest())
	}
	checkWarm(t, up, a, "regctl", func() {
		pull(t.TempDir())
		c.run("manifest", "get", "--format", "raw-body", multi)
	})
}

// TestPullThroughCoalesced32: 32 concurrent cold pulls of one image make
// exactly one upstream GET per blob (counted in the upstream's access log),
// and every puller gets every byte right.
func TestPullThroughCoalesced32(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 130, "amd64", 8<<20, 4<<20, 512<<10)
	seedImage(t, up, "library/big", "v1", im)
	viaCrane := newImage(t, 131, "amd64", 6<<20, 1<<20)
	seedImage(t, up, "library/crane", "v1", viaCrane)
	a := startCachingArca(t, []string{up.Host}, nil)
	a.cacheRule(t, "library-wild", up.Host+"/library/*", "lib/*")

	// Raw HTTP pullers released at once: manifest by tag, then each blob.
	const n = 32
	start := make(chan struct{})
	var mu sync.Mutex
	results := map[string]map[string]int{} // digest -> X-Arca-Cache -> count
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			fetch := func(path, want string) {
				h, err := fetchVerified(a.URL()+path, want)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					t.Errorf("puller: %v", err)
					return
				}
				if results[want] == nil {
					results[want] = map[string]int{}
				}
				results[want][h.Get("X-Arca-Cache")]++
			}
			fetch("/v2/lib/big/manifests/v1", im.Digest())
			for _, b := range im.blobs() {
				fetch("/v2/lib/big/blobs/"+sha(b), sha(b))
			}
		})
	}
	close(start)
	wg.Wait()
	for _, b := range im.blobs() {
		d := sha(b)
		if got := upstreamGETs(up, "/blobs/"+d); got != 1 {
			t.Errorf("blob %s (%d bytes): %d upstream GETs for %d pullers, want 1", d, len(b), got, n)
		}
		if got := results[d]; got["miss"] != 1 || got["miss"]+got["coalesced"]+got["hit"] != n {
			t.Errorf("blob %s: X-Arca-Cache counts %v, want one miss and %d coalesced or hit", d, got, n-1)
		}
	}
	if got := upstreamGETs(up, "/library/big/manifests/"); got != 1 {
		t.Errorf("manifest: %d upstream GETs for %d pullers, want 1", got, n)
	}
	t.Logf("X-Arca-Cache per object: %v", results)

	// The same with 32 crane processes pulling a second image.
	var errs []string
	c := crane(t)
	for i := range n {
		wg.Go(func() {
			out, err := c.try("--insecure", "pull", "--format", "oci", a.Ref("lib/crane:v1"), filepath.Join(t.TempDir(), fmt.Sprint(i)))
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Sprintf("crane pull %d: %v: %s", i, err, out))
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d of %d crane pulls failed:\n%s", len(errs), n, strings.Join(errs, "\n"))
	}
	for _, b := range viaCrane.blobs() {
		if got := upstreamGETs(up, "/blobs/"+sha(b)); got != 1 {
			t.Errorf("crane pulls: blob %s: %d upstream GETs for %d pullers, want 1", sha(b), got, n)
		}
	}
	t.Logf("cache results after both waves: %v", a.cacheResults(t))
}

// TestPullThroughUpstreamDown: after the upstream dies, what was pulled is
// still served: by digest, and by tag (a hit while fresh, stale once the
// revalidation interval has passed); what was never pulled fails with a
// 424 naming the rule.
func TestPullThroughUpstreamDown(t *testing.T) {
	const revalidate = 2 * time.Second
	up, a, imgs := startPullThrough(t, 140, "--revalidate-after", revalidate.String())
	c := crane(t)
	ref := a.Ref("lib/app:v1")
	c.crane("pull", "--format", "oci", ref, filepath.Join(t.TempDir(), "first"))
	up.Stop()

	check := func(when string) {
		out := filepath.Join(t.TempDir(), "again")
		c.crane("pull", "--format", "oci", ref, out)
		checkLayoutHas(t, out, imgs.app)
		if got := c.crane("digest", a.Ref("lib/app@"+imgs.app.Digest())); got != imgs.app.Digest() {
			t.Errorf("%s: by digest = %s", when, got)
		}
	}
	check("upstream down, tag fresh (or stale, on a slow machine)")
	// Past the interval however long the checks took, so this GET must
	// revalidate (and fail).
	time.Sleep(revalidate + 200*time.Millisecond)
	stale0 := a.metric(t, "arca_cache_requests_total", `result="stale"`)
	r := getCached(t, a.URL()+"/v2/lib/app/manifests/v1", imgs.app.Digest())
	if h := r.Header.Get("X-Arca-Cache"); h != "stale" {
		t.Errorf("tag past revalidation with upstream down: X-Arca-Cache %q, want stale", h)
	}
	if got := a.metric(t, "arca_cache_requests_total", `result="stale"`); got <= stale0 {
		t.Errorf("arca_cache_requests_total{result=stale} = %v, did not grow from %v", got, stale0)
	}
	check("upstream down, tag stale")

	// Never pulled: nothing to serve, the client learns which rule failed.
	r = do(t, "GET", a.URL()+"/v2/lib/multi/manifests/latest", map[string]string{"Accept": mtAcceptAll}, nil)
	if r.Status != http.StatusFailedDependency || !strings.Contains(string(r.Body), "library-wild") {
		t.Errorf("uncached tag with upstream down: %s; want 424 naming rule library-wild", r)
	}
	if !strings.Contains(a.Logs(), "serving cached manifest") {
		t.Errorf("no log line about serving the cached manifest:\n%s", a.Logs())
	}
}

// TestPullThroughCredentialSet: a credential set whose username comes from
// a file:// and password from an env:// secret reference, against an
// upstream with htpasswd basic auth and one behind a Docker-style token
// service.
func TestPullThroughCredentialSet(t *testing.T) {
	for _, auth := range []upstreamreg.Auth{upstreamreg.Htpasswd, upstreamreg.Token} {
		t.Run(auth.String(), func(t *testing.T) {
			up := upstreamreg.Start(t, upstreamreg.Options{Auth: auth, Username: "puller", Password: "s3cret-" + auth.String()})
			im := newImage(t, 150, "amd64", 2<<20, 30<<10)
			seedImage(t, up, "library/app", "v1", im)

			userFile := filepath.Join(t.TempDir(), "user")
			if err := os.WriteFile(userFile, []byte(up.Username+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			const passEnv = "ARCA_E2E_UPSTREAM_PASSWORD"
			a := startCachingArca(t, []string{up.Host}, []string{passEnv + "=" + up.Password})
			a.cli(t, "credential-set", "create", "-r", "default", "-n", "upcreds", "-l", up.Host,
				"-u", "file://"+userFile, "-p", "env://"+passEnv, "-o", "none")
			a.cacheRule(t, "authed", up.Host+"/library/*", "lib/*", "-c", "upcreds")
			a.cacheRule(t, "anonymous", up.Host+"/library/app", "anon/app")

			c := crane(t)
			if got := c.crane("digest", a.Ref("lib/app:v1")); got != im.Digest() {
				t.Errorf("crane digest = %s, want %s", got, im.Digest())
			}
			out := filepath.Join(t.TempDir(), "pulled")
			c.crane("pull", "--format", "oci", a.Ref("lib/app:v1"), out)
			checkLayoutHas(t, out, im)
			// The same upstream without the credential set is refused.
			r := do(t, "GET", a.URL()+"/v2/anon/app/manifests/v1", map[string]string{"Accept": mtAcceptAll}, nil)
			if r.Status != http.StatusFailedDependency || !strings.Contains(string(r.Body), "anonymous") {
				t.Errorf("rule without credentials: %s; want 424 naming rule anonymous", r)
			}
			show := a.cli(t, "credential-set", "show", "-r", "default", "-n", "upcreds")
			if !strings.Contains(show, `"Healthy"`) {
				t.Errorf("credential-set show: want Healthy:\n%s", show)
			}
			if strings.Contains(show, up.Password) || strings.Contains(a.Logs(), up.Password) {
				t.Errorf("the upstream password leaked into CLI output or logs")
			}
		})
	}
}
