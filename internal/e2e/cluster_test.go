package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/minio"
	"github.com/arcacache/arca/internal/testutil/pgtest"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Several replicas of the real binary on one private PostgreSQL and one
// MinIO bucket, each advertising its address to the others.

// replicaBound is the documented bound within which a change made through
// one replica is enforced on the others (docs/architecture.md): asserted
// by the tests about it (TestClusterAnyReplica), loosely.
const replicaBound = 5 * time.Second

// propagationTimeout bounds the other tests' waits for a change to reach
// every replica: far above replicaBound, so that on a loaded machine only
// a change that never arrives fails them.
const propagationTimeout = time.Minute

type cluster struct {
	minio   *minio.Server
	db      string
	blobs   string
	env     []string
	args    []string
	closed  bool
	nodes   []*arca
	dataDir []string
	// nodeBlobs, when set for a replica, is its --blobs URL instead of
	// blobs (the same bucket through a proxy of its own).
	nodeBlobs []string
}

// startCluster starts n replicas; args are more serve flags for each.
func startCluster(t testing.TB, n int, closed bool, args ...string) *cluster {
	t.Helper()
	c := newCluster(t, n, closed, args...)
	c.startAll(t)
	return c
}

// startAll starts every replica, one at a time: the first migrates the
// database.
func (c *cluster) startAll(t testing.TB) {
	t.Helper()
	for i := range c.nodes {
		c.start(t, i)
	}
}

// newCluster prepares n replicas on a fresh database and bucket without
// starting them.
func newCluster(t testing.TB, n int, closed bool, args ...string) *cluster {
	t.Helper()
	pgtest.SkipIfMissing(t)
	m := minio.Start(t)
	bucket, err := m.NewBucket(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{minio: m, db: pgtest.NewDatabase(t), blobs: m.BlobsURL(bucket, "arca"), env: append(m.Env(), "ARCA_ADMIN_TOKEN="+ptAdminToken),
		args: args, closed: closed}
	for range n {
		c.dataDir = append(c.dataDir, t.TempDir())
		c.nodes = append(c.nodes, nil)
		c.nodeBlobs = append(c.nodeBlobs, "")
	}
	return c
}

// start (re)starts replica i on a fresh address, which it advertises.
func (c *cluster) start(t testing.TB, i int) *arca {
	t.Helper()
	blobs := c.blobs
	if c.nodeBlobs[i] != "" {
		blobs = c.nodeBlobs[i]
	}
	c.nodes[i] = &arca{arcaproc.StartOnFreePort(t, func(addr string) arcaproc.Options {
		args := append([]string{"--metadata", c.db, "--blobs", blobs, "--cluster-advertise", "http://" + addr}, c.args...)
		return arcaproc.Options{Bin: arcaBin, Addr: addr, DataDir: c.dataDir[i], Args: args, Env: c.env, Closed: c.closed}
	})}
	return c.nodes[i]
}

// mgmtURL is the ARM URL of a resource of the default registry.
func mgmtURL(a *arca, resource string) string {
	return a.URL() + "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries/default" +
		resource + "?api-version=2025-11-01"
}

func mgmtDo(t testing.TB, method, u string, body any) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u, rd)
	req.Header.Set("Authorization", "Bearer "+ptAdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// onHost replaces u's host with a's (the same request to another replica).
func onHost(t testing.TB, u string, a *arca) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	p.Host = a.Addr
	return p.String()
}

// waitEveryReplica polls each replica until shows says it has the change
// (what), failing after propagationTimeout, and logs how long that took.
func (c *cluster) waitEveryReplica(t testing.TB, what string, shows func(a *arca) bool) {
	t.Helper()
	start := time.Now()
	for i, a := range c.nodes {
		waitFor(t, propagationTimeout, fmt.Sprintf("%s on replica %d", what, i), func() bool { return shows(a) })
	}
	t.Logf("%s on every replica after %s", what, time.Since(start).Round(time.Millisecond))
}

// waitRule waits until every replica serves repo through cache rule rule.
func (c *cluster) waitRule(t testing.TB, repo, rule string) {
	t.Helper()
	c.waitEveryReplica(t, fmt.Sprintf("cache rule %s for %s", rule, repo), func(a *arca) bool { return enforcesRule(t, a, repo, rule) })
}

// enforcesRule reports whether a serves repo through cache rule rule: a
// manifest push there is refused naming the rule (403; without the rule,
// 400 for the invalid manifest; on a closed server, 401 first: for open
// clusters). The probe sends nothing upstream and stores nothing, so it
// does not disturb what a test counts.
func enforcesRule(t testing.TB, a *arca, repo, rule string) bool {
	r := do(t, http.MethodPut, a.URL()+"/v2/"+repo+"/manifests/arca-rule-probe", map[string]string{"Content-Type": mtOCIManifest}, []byte("{}"))
	return r.Status == http.StatusForbidden && strings.Contains(string(r.Body), "cache rule '"+rule+"'")
}

// waitFor polls fn until it is true or within passes, and returns how long
// it took.
func waitFor(t testing.TB, within time.Duration, what string, fn func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !fn() {
		if time.Since(start) > within {
			t.Fatalf("%s: not after %s", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// TestClusterAnyReplica: with three replicas behind no sticky sessions, a
// cache rule created through one is enforced on the others within the
// documented bound, and so is its deletion; the rule's async operation
// document is served by every replica; a chunked upload whose every
// request goes to another replica completes, with a token issued by yet
// another replica.
func TestClusterAnyReplica(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 1300, "amd64", 300<<10)
	seedImage(t, up, "library/app", "v1", im)
	c := startCluster(t, 3, true, "--insecure-upstream", up.Host)
	n0, n1, n2 := c.nodes[0], c.nodes[1], c.nodes[2]
	n0.cli(t, "update", "-n", "default", "--anonymous-pull-enabled", "true")

	// Warm the others' rule caches with the registry's current (ruleless)
	// state, so what follows measures invalidation, not a first read.
	manifest := func(a *arca) int {
		return do(t, "GET", a.URL()+"/v2/lib/app/manifests/v1", map[string]string{"Accept": mtAcceptAll}, nil).Status
	}
	for _, a := range c.nodes {
		if s := manifest(a); s != http.StatusNotFound {
			t.Fatalf("before the rule: %d, want 404", s)
		}
	}
	status, hdr, body := mgmtDo(t, http.MethodPut, mgmtURL(n0, "/cacheRules/app-rule"),
		map[string]any{"properties": map[string]any{"sourceRepository": up.Host + "/library/app", "targetRepository": "lib/app"}})
	if status != http.StatusCreated {
		t.Fatalf("create rule: %d %s", status, body)
	}
	created := time.Now()
	for i, a := range []*arca{n1, n2} {
		waitFor(t, replicaBound+2*time.Second, fmt.Sprintf("rule on replica %d", i+1), func() bool { return manifest(a) == http.StatusOK })
		t.Logf("rule created on replica 0 enforced on replica %d after %s", i+1, time.Since(created).Round(time.Millisecond))
	}
	// The operation document, on every replica.
	op := hdr.Get("Azure-AsyncOperation")
	for _, a := range c.nodes {
		status, _, body := mgmtDo(t, http.MethodGet, onHost(t, op, a), nil)
		if status != http.StatusOK || !strings.Contains(string(body), `"Succeeded"`) {
			t.Errorf("operation %s on %s: %d %s", op, a.Addr, status, body)
		}
	}

	// A token from replica 2, for a chunked upload: POST on 0, PATCHes on
	// 1 and 2, PUT on 0; the blob is then on every replica.
	password := n0.adminPassword(t)
	tokenURL := n2.URL() + "/oauth2/token?service=" + n2.Addr + "&scope=" + url.QueryEscape("repository:team/up:push,pull")
	tr := do(t, "GET", tokenURL, map[string]string{"Authorization": basicAuth("default", password)}, nil)
	var tok struct {
		Token string `json:"token"`
	}
	if tr.Status != http.StatusOK || json.Unmarshal(tr.Body, &tok) != nil || tok.Token == "" {
		t.Fatalf("token from replica 2: %s", tr)
	}
	authz := map[string]string{"Authorization": "Bearer " + tok.Token}
	// The internal endpoint is for replicas only: neither anonymous nor a
	// data-plane token gets in.
	internal := n1.URL() + "/arca-internal/v1/fetch?host=x&path=y&cred=&digest=" + sha([]byte("x"))
	for what, h := range map[string]map[string]string{"no token": nil, "a data-plane token": authz,
		"admin Basic": {"Authorization": basicAuth("default", password)}} {
		if r := do(t, "GET", internal, h, nil); r.Status != http.StatusUnauthorized {
			t.Errorf("internal endpoint with %s: %s, want 401", what, r)
		}
	}
	blob := randomBytes(1301, 3<<20+123)
	chunks := [][]byte{blob[:1<<20], blob[1<<20 : 2<<20], blob[2<<20:]}
	r := do(t, "POST", n0.URL()+"/v2/team/up/blobs/uploads/", authz, nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload on replica 0: %s", r)
	}
	loc := r.Header.Get("Location")
	off := 0
	for i, ch := range chunks {
		a := c.nodes[(i+1)%3]
		h := map[string]string{"Authorization": authz["Authorization"], "Content-Type": "application/octet-stream",
			"Content-Range": fmt.Sprintf("%d-%d", off, off+len(ch)-1)}
		r := do(t, "PATCH", a.resolve(t, loc), h, ch)
		if r.Status != http.StatusAccepted {
			t.Fatalf("PATCH chunk %d on replica %d: %s", i, (i+1)%3, r)
		}
		off += len(ch)
		loc = r.Header.Get("Location")
	}
	r = do(t, "PUT", withDigest(n0.resolve(t, loc), sha(blob)), authz, nil)
	if r.Status != http.StatusCreated {
		t.Fatalf("PUT upload on replica 0: %s", r)
	}
	for _, a := range c.nodes {
		g := do(t, "GET", a.URL()+"/v2/team/up/blobs/"+sha(blob), authz, nil)
		if g.Status != http.StatusOK || !bytes.Equal(g.Body, blob) {
			t.Errorf("blob on %s: %d, %d bytes", a.Addr, g.Status, len(g.Body))
		}
	}

	// Deleting the rule through replica 1 stops pulls through it on the
	// others within the bound: each poll asks for a tag never pulled
	// before (a pulled one would stay cached).
	tags := make([]string, 300)
	for i := range tags {
		tags[i] = fmt.Sprintf("t%d", i)
	}
	up.Tag(t, "library/app", digest.Digest(im.Digest()), tags...)
	// Their rule caches are fresh when the rule goes.
	for _, a := range []*arca{n0, n2} {
		if s := manifest(a); s != http.StatusOK {
			t.Fatalf("v1 on %s before the deletion: %d", a.Addr, s)
		}
	}
	if status, _, body := mgmtDo(t, http.MethodDelete, mgmtURL(n1, "/cacheRules/app-rule"), nil); status >= 300 {
		t.Fatalf("delete rule: %d %s", status, body)
	}
	deleted := time.Now()
	next := 0
	for _, i := range []int{0, 2} {
		a := c.nodes[i]
		waitFor(t, replicaBound+2*time.Second, fmt.Sprintf("rule deletion on replica %d", i), func() bool {
			next++
			return do(t, "GET", a.URL()+"/v2/lib/app/manifests/"+tags[next%len(tags)], map[string]string{"Accept": mtAcceptAll}, nil).Status == http.StatusNotFound
		})
		t.Logf("rule deleted on replica 1 enforced on replica %d after %s", i, time.Since(deleted).Round(time.Millisecond))
	}
}

// pullBlob GETs blob want from a and checks its bytes; firstByte, if set,
// receives the time the first body byte arrived.
func pullBlob(a *arca, repo string, want []byte, firstByte func(time.Time)) error {
	resp, err := httpc.Get(a.URL() + "/v2/" + repo + "/blobs/" + sha(want))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("GET blob %s on %s: %s %s", sha(want)[:19], a.Addr, resp.Status, b)
	}
	var got bytes.Buffer
	one := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, one); err != nil {
		return fmt.Errorf("GET blob on %s: %w", a.Addr, err)
	}
	if firstByte != nil {
		firstByte(time.Now())
	}
	got.Write(one)
	if _, err := io.Copy(&got, resp.Body); err != nil {
		return fmt.Errorf("GET blob on %s after %d bytes: %w", a.Addr, got.Len(), err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		return fmt.Errorf("GET blob on %s: %d bytes, digest %s, want %s", a.Addr, got.Len(), sha(got.Bytes()), sha(want))
	}
	return nil
}

// pullImage pulls im's manifest and blobs from a, each blob's bytes checked.
func pullImage(a *arca, repo, tag string, im *testImage) error {
	resp, err := httpc.Do(func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, a.URL()+"/v2/"+repo+"/manifests/"+tag, nil)
		req.Header.Set("Accept", mtAcceptAll)
		return req
	}())
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Equal(b, im.Manifest) {
		return fmt.Errorf("manifest on %s: %s, %d bytes", a.Addr, resp.Status, len(b))
	}
	for _, blob := range im.blobs() {
		if err := pullBlob(a, repo, blob, nil); err != nil {
			return err
		}
	}
	return nil
}

// TestClusterOneUpstreamGETPerBlob: 32 concurrent cold pulls spread over
// three replicas make one upstream GET per blob (the upstream's access
// log), every pull byte-identical; the replicas that did not fetch followed
// the one that did, and their clients got bytes before the blob was whole
// (the upstream stalls each layer mid-body for a while).
func TestClusterOneUpstreamGETPerBlob(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1310, "amd64", 1<<20, 2<<20+7, 512<<10)
	seedImage(t, up, "library/app", "v1", im)
	// Long enough for the followers to start and get their first bytes on a
	// loaded machine while the stall holds the upstream.
	const stall = 4 * time.Second
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, CutAfter: 100 << 10, Stall: stall})
	c := startCluster(t, 3, false, "--insecure-upstream", proxy.Host())
	c.nodes[0].cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	// The first pull of the big layer starts on replica 0; one on each of
	// the others follows it: their first byte comes while the upstream
	// stalls.
	big := im.Layers[1]
	started := time.Now()
	errs := make(chan error, 40)
	firsts := make(chan time.Duration, 2)
	go func() { errs <- pullBlob(c.nodes[0], "lib/app", big, nil) }()
	// Replica 0's fetch has reached the upstream (so it holds the lease)
	// before the others ask: a fixed head start may not be enough on a
	// loaded machine.
	waitFor(t, 30*time.Second, "replica 0's fetch of the big layer reaches the upstream", func() bool {
		return proxy.Requests(http.MethodGet, "/blobs/"+sha(big)) > 0
	})
	for _, a := range c.nodes[1:] {
		go func() {
			errs <- pullBlob(a, "lib/app", big, func(at time.Time) { firsts <- at.Sub(started) })
		}()
	}
	// 32 whole-image pulls spread over the replicas meanwhile.
	for i := range 32 {
		go func() { errs <- pullImage(c.nodes[i%3], "lib/app", "v1", im) }()
	}
	for range 35 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	total := time.Since(started)
	for range 2 {
		first := <-firsts
		t.Logf("follower replica: first byte after %s; all pulls done after %s", first.Round(time.Millisecond), total.Round(time.Millisecond))
		if first >= stall {
			t.Errorf("a follower replica's client got its first byte after %s, not before the upstream's %s stall ended", first, stall)
		}
	}
	for i, b := range im.blobs() {
		if n := upstreamGETs(up, "/blobs/"+sha(b)); n != 1 {
			t.Errorf("blob %d (%d bytes): %d upstream GETs, want 1", i, len(b), n)
		}
	}
	follows := 0.0
	for _, a := range c.nodes {
		follows += a.metric(t, "arca_cache_peer_follows_total")
	}
	if follows == 0 {
		t.Error("no replica followed another's fetch (arca_cache_peer_follows_total)")
	}
	t.Logf("peer follows: %v", follows)
}

// pullRetrying pulls blob want from the replicas in turn, starting with
// the first, until one serves it whole (a client retrying elsewhere), for
// at most within.
func pullRetrying(replicas []*arca, repo string, want []byte, within time.Duration) (tries int, err error) {
	deadline := time.Now().Add(within)
	for i := 0; ; i++ {
		err = pullBlob(replicas[i%len(replicas)], repo, want, nil)
		if err == nil || time.Now().After(deadline) {
			return i + 1, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterFetchHolderKilled: the replica fetching a blob is SIGKILLed
// mid-transfer, while a client on another replica follows it. The killed
// replica's client retries on another replica; the follower's client sees
// a pause, not a cut: its replica takes the lapsed lease over (a second
// upstream GET, no more) and goes on from where the stream stopped. Both
// get the verified blob; what is stored is the right content.
func TestClusterFetchHolderKilled(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	proxy := upstreamreg.NewFaultProxy(t, up)
	im := newImage(t, 1320, "amd64", 2<<20+11)
	seedImage(t, up, "library/app", "v1", im)
	proxy.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, CutAfter: 200 << 10, Stall: 4 * time.Second})
	c := startCluster(t, 3, false, "--insecure-upstream", proxy.Host(), "--fetch-lease-ttl", "3s")
	n0, n1, n2 := c.nodes[0], c.nodes[1], c.nodes[2]
	n0.cacheRule(t, "app-rule", proxy.Host()+"/library/app", "lib/app")
	c.waitRule(t, "lib/app", "app-rule")

	blob := im.Layers[0]
	type result struct {
		who   string
		tries int
		err   error
	}
	res := make(chan result, 2)
	go func() {
		tries, err := pullRetrying([]*arca{n0, n2, n1}, "lib/app", blob, time.Minute)
		res <- result{"client of the killed replica", tries, err}
	}()
	// Replica 0's fetch has reached the upstream, so replica 1 follows it
	// (after a fixed wait, a loaded machine could have replica 1 fetch
	// first, and the kill would hit a follower).
	waitFor(t, 30*time.Second, "replica 0's fetch reaches the upstream", func() bool {
		return proxy.Requests(http.MethodGet, "/blobs/"+sha(blob)) > 0
	})
	following := make(chan struct{})
	go func() {
		// No retry: replica 1 resumes its fetch from the next source.
		err := pullBlob(n1, "lib/app", blob, func(time.Time) { close(following) })
		res <- result{"client of the following replica", 1, err}
	}()
	select {
	case <-following:
	case <-time.After(10 * time.Second):
		t.Fatal("the client on replica 1 got no byte of the blob replica 0 fetches")
	}
	n0.Kill9()
	killed := time.Now()
	for range 2 {
		r := <-res
		if r.err != nil {
			t.Errorf("%s: %v", r.who, r.err)
		} else {
			t.Logf("%s: blob whole after %d tries, %s after the kill", r.who, r.tries, time.Since(killed).Round(time.Millisecond))
		}
	}
	if n := upstreamGETs(up, "/blobs/"+sha(blob)); n != 2 {
		t.Errorf("upstream GETs of the blob: %d, want 2 (the killed replica's, the taker's)", n)
	}
	// The taker commits right after its clients got the verified bytes.
	for _, a := range []*arca{n1, n2} {
		waitFor(t, 10*time.Second, "blob stored after the takeover", func() bool {
			r := getCached(t, a.URL()+"/v2/lib/app/blobs/"+sha(blob), sha(blob))
			return r.Header.Get("X-Arca-Cache") == "hit"
		})
	}
	// A fresh replica in the dead one's place serves the stored blob.
	n0 = c.start(t, 0)
	getCached(t, n0.URL()+"/v2/lib/app/blobs/"+sha(blob), sha(blob))
}
