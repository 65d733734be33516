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
// one replica is enforced on the others (docs/architecture.md).
const replicaBound = 5 * time.Second

type cluster struct {
	db      string
	blobs   string
	env     []string
	args    []string
	closed  bool
	nodes   []*arca
	dataDir []string
}

// startCluster starts n replicas; args are more serve flags for each.
func startCluster(t testing.TB, n int, closed bool, args ...string) *cluster {
	t.Helper()
	pgtest.SkipIfMissing(t)
	m := minio.Start(t)
	bucket, err := m.NewBucket(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{db: pgtest.NewDatabase(t), blobs: m.BlobsURL(bucket, "arca"), env: append(m.Env(), "ARCA_ADMIN_TOKEN="+ptAdminToken),
		args: args, closed: closed}
	for range n {
		c.dataDir = append(c.dataDir, t.TempDir())
		c.nodes = append(c.nodes, nil)
	}
	// One at a time: the first migrates the database.
	for i := range n {
		c.start(t, i, freeAddr(t))
	}
	return c
}

// start (re)starts replica i on addr.
func (c *cluster) start(t testing.TB, i int, addr string) *arca {
	t.Helper()
	args := append([]string{"--metadata", c.db, "--blobs", c.blobs, "--cluster-advertise", "http://" + addr}, c.args...)
	c.nodes[i] = &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Addr: addr, DataDir: c.dataDir[i], Args: args, Env: c.env, Closed: c.closed})}
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
