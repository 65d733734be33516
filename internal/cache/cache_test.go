package cache_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/registry"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
	"github.com/arcacache/arca/internal/upstream"
)

// prefixRules maps "<prefix>/<rest>" to upstream "<host>/<rest>"; the real
// rule index is tested in internal/rules and wired in the server tests.
type prefixRules struct {
	prefix string
	host   string
	creds  upstream.Credentials
}

func (p prefixRules) Resolve(_ context.Context, _, repo, ns string) (cache.Target, bool, error) {
	if ns != "" || !strings.HasPrefix(repo, p.prefix+"/") {
		return cache.Target{}, false, nil
	}
	key := ""
	if p.creds != nil {
		key = "creds"
	}
	return cache.Target{Rule: "test-rule", Repo: repo, Upstream: upstream.Repo{
		Host: p.host, Path: strings.TrimPrefix(repo, p.prefix+"/"), Creds: p.creds, CredKey: key,
	}}, true, nil
}

func (p prefixRules) MirrorsHost(context.Context, string, string) (bool, error) { return false, nil }

type env struct {
	srv   *httptest.Server
	cache *cache.Cache
	blobs blobstore.Backend
	up    *upstream.Client
	meta  metadata.Store
	dir   string
}

// waitHealthy waits until the upstream client's health probe has seen
// host answer again (a failing host is marked unhealthy for a while).
func (e *env) waitHealthy(t *testing.T, host string) {
	t.Helper()
	for start := time.Now(); !e.up.HostHealth(host).Healthy; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s still unhealthy after 30s: %+v", host, e.up.HostHealth(host))
		}
	}
}

func newEnv(t testing.TB, upHost string, revalidate time.Duration, creds upstream.Credentials) *env {
	t.Helper()
	return newEnvRules(t, prefixRules{prefix: "cached", host: upHost, creds: creds}, revalidate, upHost)
}

// newEnvRules serves rules, allowing plain HTTP to the given upstreams.
func newEnvRules(t testing.TB, rules registry.Resolver, revalidate time.Duration, upHosts ...string) *env {
	t.Helper()
	dir := t.TempDir()
	blobs, err := blobstore.NewFS(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	return newEnvBlobs(t, rules, revalidate, blobs, dir, upHosts...)
}

// newEnvBlobs is newEnvRules with blobs in the given backend.
func newEnvBlobs(t testing.TB, rules registry.Resolver, revalidate time.Duration, blobs blobstore.Backend, dir string, upHosts ...string) *env {
	t.Helper()
	meta, err := metadata.OpenSQLite(context.Background(), filepath.Join(dir, "arca.db"))
	if err != nil {
		t.Fatal(err)
	}
	up, err := upstream.New(upstream.Options{Insecure: upHosts, MaxRetries: 2, TagPageSize: 64, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	c := cache.New(cache.Options{Blobs: blobs, SpoolDir: dir, Meta: meta, Upstream: up, Revalidate: revalidate, FetchTimeout: time.Minute})
	h := registry.New(registry.Options{
		Blobs: blobs, Meta: meta, Registry: func(*http.Request) string { return "default" },
		Rules: rules, Cache: c,
	})
	srv := httptest.NewServer(h)
	t.Cleanup(func() { srv.Close(); c.Wait(); meta.Close() })
	return &env{srv: srv, cache: c, blobs: blobs, up: up, meta: meta, dir: dir}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

type result struct {
	status int
	cache  string
	body   []byte
	err    error
}

func get(t *testing.T, url string) result {
	t.Helper()
	return getWith(t, http.DefaultClient, url)
}

func getWith(t *testing.T, client *http.Client, url string) result {
	t.Helper()
	res, err := client.Get(url)
	if err != nil {
		return result{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return result{status: res.StatusCode, cache: res.Header.Get("X-Arca-Cache"), body: b, err: err}
}

func layersOf(t *testing.T, body []byte) []digest.Digest {
	t.Helper()
	m, err := oci.ParseManifest("", body)
	if err != nil {
		t.Fatal(err)
	}
	out := []digest.Digest{m.Config.Digest}
	for _, l := range m.Layers {
		out = append(out, l.Digest)
	}
	return out
}

func TestPullThroughStoresAndServesLocally(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(3 << 20)
	md := up.Push(t, "library/app", "v1", layer)
	e := newEnv(t, up.Host, time.Hour, nil)

	r := get(t, e.srv.URL+"/v2/cached/library/app/manifests/v1")
	if r.err != nil || r.status != 200 || r.cache != "miss" || digest.FromBytes(r.body) != md {
		t.Fatalf("first pull: %d %q %v", r.status, r.cache, r.err)
	}
	for _, d := range layersOf(t, r.body) {
		b := get(t, e.srv.URL+"/v2/cached/library/app/blobs/"+d.String())
		if b.err != nil || b.status != 200 || digest.FromBytes(b.body) != d || b.cache != "miss" {
			t.Fatalf("blob %s: %d %q %v", d, b.status, b.cache, b.err)
		}
	}
	e.cache.Wait()
	// Later pulls are local: by tag (fresh), by digest, and the blobs.
	if r := get(t, e.srv.URL+"/v2/cached/library/app/manifests/v1"); r.cache != "hit" {
		t.Fatalf("second pull: %q", r.cache)
	}
	if r := get(t, e.srv.URL+"/v2/cached/library/app/manifests/"+md.String()); r.cache != "hit" {
		t.Fatalf("digest pull: %q", r.cache)
	}
	ld := digest.FromBytes(layer)
	if r := get(t, e.srv.URL+"/v2/cached/library/app/blobs/"+ld.String()); r.cache != "hit" || !bytes.Equal(r.body, layer) {
		t.Fatalf("second blob pull: %q", r.cache)
	}
	if n := up.Requests("GET", "/blobs/"+ld.String()); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
	// Cached repositories are listed.
	if r := get(t, e.srv.URL+"/v2/cached/library/app/tags/list"); !strings.Contains(string(r.body), `"v1"`) {
		t.Fatalf("tags: %s", r.body)
	}
	if r := get(t, e.srv.URL+"/v2/_catalog"); !strings.Contains(string(r.body), "cached/library/app") {
		t.Fatalf("catalog: %s", r.body)
	}
	// Pushes into a cached repository are denied.
	res, _ := http.Post(e.srv.URL+"/v2/cached/library/app/blobs/uploads/", "", nil)
	if res.StatusCode != http.StatusForbidden {
		t.Fatalf("push: %d", res.StatusCode)
	}
}

// 32 concurrent cold pulls of one blob cause exactly one upstream GET, and
// everyone gets the right bytes.
func TestConcurrentColdPullsCoalesce(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(24 << 20)
	up.Push(t, "img", "v1", layer)
	e := newEnv(t, up.Host, time.Hour, nil)
	ld := digest.FromBytes(layer)

	var wg sync.WaitGroup
	results := make([]result, 32)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = get(t, e.srv.URL+"/v2/cached/img/blobs/"+ld.String())
		}(i)
	}
	wg.Wait()
	statuses := map[string]int{}
	for i, r := range results {
		if r.err != nil || r.status != 200 || !bytes.Equal(r.body, layer) {
			t.Fatalf("client %d: %d %v (len %d)", i, r.status, r.err, len(r.body))
		}
		statuses[r.cache]++
	}
	if n := up.Requests("GET", "/blobs/"+ld.String()); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1 (statuses %v)", n, statuses)
	}
	if statuses["miss"] != 1 {
		t.Fatalf("want exactly one miss: %v", statuses)
	}
}

// A cut or corrupted upstream transfer fails the client's transfer and
// stores nothing; the next pull fetches again and succeeds.
func TestBrokenUpstreamTransferStoresNothing(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(8 << 20)
	up.Push(t, "img", "v1", layer)
	proxy := upstreamreg.NewFaultProxy(t, up)
	brokenTransfers(t, newEnv(t, proxy.Host(), time.Hour, nil), proxy, layer)
}

// The same on S3, where the fetch verifies its local spool and the
// upload follows it.
func TestBrokenUpstreamTransferStoresNothingS3(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(8 << 20)
	up.Push(t, "img", "v1", layer)
	proxy := upstreamreg.NewFaultProxy(t, up)
	srv, bucket := startS3(t)
	blobs := s3Blobs(t, srv, bucket, srv.Addr)
	brokenTransfers(t, newEnvBlobs(t, prefixRules{prefix: "cached", host: proxy.Host()}, time.Hour, blobs, t.TempDir(), proxy.Host()), proxy, layer)
}

// brokenTransfers: a cut and a corrupt upstream transfer never complete at
// the client and store nothing; afterwards the blob is fetched whole.
func brokenTransfers(t *testing.T, e *env, proxy *upstreamreg.FaultProxy, layer []byte) {
	t.Helper()
	ld := digest.FromBytes(layer)
	url := e.srv.URL + "/v2/cached/img/blobs/" + ld.String()

	for name, inject := range map[string]func(){
		"cut":     func() { proxy.CutBlobsAfter(1<<20, 1) },
		"corrupt": func() { proxy.CorruptBlobs(1) },
	} {
		inject()
		r := get(t, url)
		if r.err == nil && r.status == 200 && bytes.Equal(r.body, layer) {
			t.Fatalf("%s: client got a complete body", name)
		}
		if r.err == nil && r.status == 200 {
			t.Fatalf("%s: transfer looked successful with %d bytes", name, len(r.body))
		}
		e.cache.Wait()
		if _, err := e.blobs.Stat(context.Background(), ld); err == nil {
			t.Fatalf("%s: broken content was stored", name)
		}
	}
	proxy.Reset()
	if r := get(t, url); r.err != nil || !bytes.Equal(r.body, layer) {
		t.Fatalf("after faults: %d %v", r.status, r.err)
	}
}

// Over TLS a follower writes from the fetch's memory, not with SendFile
// (net/http would read the file back into a buffer there): a cut transfer
// still never completes at the client, and a whole one is exact.
func TestColdPullOverTLS(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(8 << 20)
	up.Push(t, "img", "v1", layer)
	proxy := upstreamreg.NewFaultProxy(t, up)
	e := newEnv(t, proxy.Host(), time.Hour, nil)
	srv := httptest.NewTLSServer(e.srv.Config.Handler)
	t.Cleanup(srv.Close)
	url := srv.URL + "/v2/cached/img/blobs/" + digest.FromBytes(layer).String()
	proxy.CutBlobsAfter(1<<20, 1)
	if r := getWith(t, srv.Client(), url); r.err == nil && r.status == 200 {
		t.Fatalf("cut transfer looked successful with %d bytes", len(r.body))
	}
	e.cache.Wait()
	proxy.Reset()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := getWith(t, srv.Client(), url); r.err != nil || r.status != 200 || !bytes.Equal(r.body, layer) {
				t.Errorf("cold pull over TLS: %d %v (%d bytes)", r.status, r.err, len(r.body))
			}
		}()
	}
	wg.Wait()
}

// A client that leaves mid-blob does not stop the cache from filling.
func TestClientDisconnectStillFills(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(16 << 20)
	up.Push(t, "img", "v1", layer)
	e := newEnv(t, up.Host, time.Hour, nil)
	ld := digest.FromBytes(layer)
	res, err := http.Get(e.srv.URL + "/v2/cached/img/blobs/" + ld.String())
	if err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, res.Body, 1<<20)
	res.Body.Close()
	e.cache.Wait()
	if size, err := e.blobs.Stat(context.Background(), ld); err != nil || size != int64(len(layer)) {
		t.Fatalf("blob not stored after disconnect: %v", err)
	}
}

// Tags: revalidated after the interval; served stale when the upstream is
// down; a moved tag is picked up.
func TestTagFreshnessAndStaleIfError(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	first := up.Push(t, "img", "latest", randomBytes(1000))
	proxy := upstreamreg.NewFaultProxy(t, up)
	e := newEnv(t, proxy.Host(), time.Millisecond, nil)
	url := e.srv.URL + "/v2/cached/img/manifests/latest"

	if r := get(t, url); r.cache != "miss" || digest.FromBytes(r.body) != first {
		t.Fatalf("first: %q", r.cache)
	}
	time.Sleep(5 * time.Millisecond)
	heads := proxy.Requests("HEAD", "/manifests/latest")
	if r := get(t, url); r.cache != "hit" || digest.FromBytes(r.body) != first {
		t.Fatalf("revalidated: %q", r.cache)
	}
	if proxy.Requests("HEAD", "/manifests/latest") != heads+1 {
		t.Fatal("revalidation did not use HEAD")
	}
	proxy.Down()
	time.Sleep(5 * time.Millisecond)
	if r := get(t, url); r.status != 200 || r.cache != "stale" || digest.FromBytes(r.body) != first {
		t.Fatalf("upstream down: %d %q", r.status, r.cache)
	}
	proxy.Up(t)
	proxy.Unavailable(10)
	time.Sleep(5 * time.Millisecond)
	if r := get(t, url); r.status != 200 || r.cache != "stale" {
		t.Fatalf("upstream 503: %d %q", r.status, r.cache)
	}
	proxy.Reset()
	e.waitHealthy(t, proxy.Host())
	second := up.Push(t, "img", "latest", randomBytes(1000))
	time.Sleep(5 * time.Millisecond)
	if r := get(t, url); r.cache != "miss" || digest.FromBytes(r.body) != second {
		t.Fatalf("moved tag: %q", r.cache)
	}
	// A digest pull never needs the upstream.
	proxy.Down()
	if r := get(t, e.srv.URL+"/v2/cached/img/manifests/"+first.String()); r.status != 200 || r.cache != "hit" {
		t.Fatalf("digest pull with upstream down: %d %q", r.status, r.cache)
	}
}

func errorCode(b []byte) string {
	var e struct {
		Errors []struct{ Code, Message string }
	}
	if json.Unmarshal(b, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code + ": " + e.Errors[0].Message
}

// Nothing cached and the upstream fails: 404 stays 404; the rest is 424
// naming the rule; 429 is retried honouring Retry-After.
func TestUpstreamErrors(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.Push(t, "img", "v1", randomBytes(100))
	proxy := upstreamreg.NewFaultProxy(t, up)
	e := newEnv(t, proxy.Host(), time.Hour, nil)

	r := get(t, e.srv.URL+"/v2/cached/img/manifests/nope")
	if r.status != 404 || !strings.HasPrefix(errorCode(r.body), "MANIFEST_UNKNOWN") {
		t.Fatalf("404: %d %s", r.status, r.body)
	}
	proxy.Unavailable(100)
	r = get(t, e.srv.URL+"/v2/cached/img/manifests/v1")
	if r.status != http.StatusFailedDependency || !strings.Contains(string(r.body), "test-rule") {
		t.Fatalf("503 upstream: %d %s", r.status, r.body)
	}
	proxy.Reset()
	e.waitHealthy(t, proxy.Host())
	proxy.TooManyRequests(1, "1")
	start := time.Now()
	r = get(t, e.srv.URL+"/v2/cached/img/manifests/v1")
	if r.status != 200 {
		t.Fatalf("after one 429: %d %s", r.status, r.body)
	}
	if time.Since(start) < 900*time.Millisecond {
		t.Fatalf("Retry-After not honoured: retried after %v", time.Since(start))
	}
}

func TestAuthenticatedUpstreams(t *testing.T) {
	for _, auth := range []upstreamreg.Auth{upstreamreg.Htpasswd, upstreamreg.Token} {
		t.Run(auth.String(), func(t *testing.T) {
			up := upstreamreg.Start(t, upstreamreg.Options{Auth: auth, Username: "puller", Password: "s3cret"})
			layer := randomBytes(2000)
			md := up.Push(t, "private/img", "v1", layer)
			good := func(context.Context) (string, string, error) { return "puller", "s3cret", nil }
			e := newEnv(t, up.Host, time.Hour, good)
			r := get(t, e.srv.URL+"/v2/cached/private/img/manifests/v1")
			if r.status != 200 || digest.FromBytes(r.body) != md {
				t.Fatalf("manifest: %d %s", r.status, r.body)
			}
			ld := digest.FromBytes(layer)
			if b := get(t, e.srv.URL+"/v2/cached/private/img/blobs/"+ld.String()); !bytes.Equal(b.body, layer) {
				t.Fatalf("blob: %d", b.status)
			}
			bad := func(context.Context) (string, string, error) { return "puller", "wrong", nil }
			e2 := newEnv(t, up.Host, time.Hour, bad)
			if r := get(t, e2.srv.URL+"/v2/cached/private/img/manifests/v1"); r.status != http.StatusFailedDependency {
				t.Fatalf("bad credentials: %d %s", r.status, r.body)
			}
		})
	}
}

func TestReferrersThroughCache(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	img := up.PushImage(t, "img", "v1", &oci.Platform{OS: "linux", Architecture: "amd64"}, randomBytes(100))
	sig := up.PushReferrer(t, "img", img, "application/vnd.cncf.notary.signature", map[string]string{"k": "v"})
	e := newEnv(t, up.Host, time.Hour, nil)
	r := get(t, e.srv.URL+"/v2/cached/img/referrers/"+img.Digest.String())
	var idx oci.Index
	if err := json.Unmarshal(r.body, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sig.Digest {
		t.Fatalf("referrers: %d %s", r.status, r.body)
	}
	if idx.Manifests[0].ArtifactType != "application/vnd.cncf.notary.signature" {
		t.Fatalf("artifactType: %+v", idx.Manifests[0])
	}
	// The signature itself pulls through by digest.
	if r := get(t, e.srv.URL+"/v2/cached/img/manifests/"+sig.Digest.String()); r.status != 200 || digest.FromBytes(r.body) != sig.Digest {
		t.Fatalf("signature manifest: %d", r.status)
	}
}

// A HEAD of a blob nothing has stored yet asks the upstream with a HEAD:
// nothing is downloaded or stored.
func TestHeadBlobDoesNotFetch(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(1 << 20)
	up.Push(t, "img", "v1", layer)
	e := newEnv(t, up.Host, time.Hour, nil)
	ld := digest.FromBytes(layer)
	res, err := http.Head(e.srv.URL + "/v2/cached/img/blobs/" + ld.String())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.ContentLength != int64(len(layer)) || res.Header.Get("X-Arca-Cache") != "miss" {
		t.Fatalf("HEAD: %d %d %q", res.StatusCode, res.ContentLength, res.Header.Get("X-Arca-Cache"))
	}
	if n := up.Requests("GET", "/blobs/"+ld.String()); n != 0 {
		t.Fatalf("HEAD downloaded the blob (%d GETs)", n)
	}
	if _, err := e.blobs.Stat(context.Background(), ld); err == nil {
		t.Fatal("HEAD stored the blob")
	}
	res, _ = http.Head(e.srv.URL + "/v2/cached/img/blobs/" + digest.FromString("absent").String())
	if res.StatusCode != 404 {
		t.Fatalf("HEAD of an absent blob: %d", res.StatusCode)
	}
}
