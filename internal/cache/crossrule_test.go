package cache_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
	"github.com/arcacache/arca/internal/upstream"
)

// multiRules maps "<prefix>/<rest>" to upstream "<host>/<rest>", one rule
// per prefix (each its own rule, upstream and credential identity).
type multiRules map[string]string

func (m multiRules) target(repo string) (cache.Target, bool) {
	prefix, rest, ok := strings.Cut(repo, "/")
	host, known := m[prefix]
	if !ok || !known {
		return cache.Target{}, false
	}
	return cache.Target{Rule: "rule-" + prefix, Repo: repo, Upstream: upstream.Repo{Host: host, Path: rest, CredKey: "creds-" + prefix}}, true
}

func (m multiRules) Resolve(_ context.Context, _, repo, ns string) (cache.Target, bool, error) {
	if ns != "" {
		return cache.Target{}, false, nil
	}
	t, ok := m.target(repo)
	return t, ok, nil
}

func (m multiRules) MirrorsHost(context.Context, string, string) (bool, error) { return false, nil }

// getConcurrently GETs the URLs at once, the first one ahead: the others
// start once upstreamStarted says its fetch reached the upstream, so that
// fetch is the one under way when they arrive (a fixed head start is not
// enough on a loaded machine).
func getConcurrently(t *testing.T, upstreamStarted func() bool, urls ...string) []result {
	t.Helper()
	out := make([]result, len(urls))
	var wg sync.WaitGroup
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = get(t, u)
		}()
		if i == 0 {
			for deadline := time.Now().Add(30 * time.Second); !upstreamStarted(); time.Sleep(5 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the first GET (%s) did not reach the upstream within 30s", u)
				}
			}
		}
	}
	wg.Wait()
	return out
}

// Rule A's upstream lacks the blob, rule B's has it; both are asked cold at
// the same time while A's request is under way. B's client gets the blob
// (a fetch keyed by digest alone made it share A's failure), A's gets 404,
// and only B's repository holds the blob afterwards.
func TestCrossRuleColdPullsDoNotShareFetches(t *testing.T) {
	upA := upstreamreg.Start(t, upstreamreg.Options{})
	upB := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(4 << 20)
	ld := digest.FromBytes(layer)
	upB.Push(t, "img", "v1", layer)
	upA.Push(t, "img", "v1", randomBytes(1000)) // the repository exists, the blob does not
	slowA := upstreamreg.NewFaultProxy(t, upA)
	slowA.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", Delay: 2 * time.Second, Count: -1})
	e := newEnvRules(t, multiRules{"a": slowA.Host(), "b": upB.Host}, time.Hour, slowA.Host(), upB.Host)

	aStarted := func() bool { return slowA.Requests(http.MethodGet, "/blobs/"+ld.String()) > 0 }
	res := getConcurrently(t, aStarted, e.srv.URL+"/v2/a/img/blobs/"+ld.String(), e.srv.URL+"/v2/b/img/blobs/"+ld.String())
	if r := res[1]; r.err != nil || r.status != 200 || !bytes.Equal(r.body, layer) {
		t.Fatalf("rule B's client: %d %q %v %s", r.status, r.cache, r.err, errorCode(r.body))
	}
	if r := res[0]; r.status != 404 || !strings.HasPrefix(errorCode(r.body), "BLOB_UNKNOWN") {
		t.Fatalf("rule A's client: %d %s", r.status, r.body)
	}
	e.cache.Wait()
	ctx := context.Background()
	if _, err := e.meta.BlobSize(ctx, "default", "b/img", ld); err != nil {
		t.Fatalf("B's repository not linked: %v", err)
	}
	if _, err := e.meta.BlobSize(ctx, "default", "a/img", ld); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("A's repository linked to a blob its upstream lacks: %v", err)
	}
}

// Two rules with the same upstream repository and credentials share one
// fetch, and both repositories are linked to the blob.
func TestCoalescedFetchLinksEveryFollower(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(8 << 20)
	ld := digest.FromBytes(layer)
	up.Push(t, "img", "v1", layer)
	slow := upstreamreg.NewFaultProxy(t, up)
	// The stall keeps the first fetch under way while the second client
	// arrives (long enough for a loaded machine).
	slow.Inject(upstreamreg.Fault{Method: http.MethodGet, PathContains: "/blobs/", CutAfter: 1 << 20, Stall: 2 * time.Second, Count: 1})
	rules := sameCreds{multiRules{"c1": slow.Host(), "c2": slow.Host()}}
	e := newEnvRules(t, rules, time.Hour, slow.Host())

	started := func() bool { return slow.Requests(http.MethodGet, "/blobs/"+ld.String()) > 0 }
	res := getConcurrently(t, started, e.srv.URL+"/v2/c1/img/blobs/"+ld.String(), e.srv.URL+"/v2/c2/img/blobs/"+ld.String())
	for i, r := range res {
		if r.err != nil || r.status != 200 || !bytes.Equal(r.body, layer) {
			t.Fatalf("client %d: %d %v", i, r.status, r.err)
		}
	}
	if res[1].cache != "coalesced" {
		t.Fatalf("second client: %q, want coalesced", res[1].cache)
	}
	e.cache.Wait()
	if n := slow.Requests(http.MethodGet, "/blobs/"+ld.String()); n != 1 {
		t.Fatalf("upstream blob GETs = %d, want 1", n)
	}
	for _, repo := range []string{"c1/img", "c2/img"} {
		if _, err := e.meta.BlobSize(context.Background(), "default", repo, ld); err != nil {
			t.Fatalf("%s not linked: %v", repo, err)
		}
	}
}

// sameCreds gives every rule the same upstream credential identity.
type sameCreds struct{ multiRules }

func (s sameCreds) Resolve(ctx context.Context, reg, repo, ns string) (cache.Target, bool, error) {
	t, ok, err := s.multiRules.Resolve(ctx, reg, repo, ns)
	t.Upstream.CredKey = "shared"
	return t, ok, err
}

// A blob stored for one rule's repository is not served, linked or
// answered to a HEAD through another rule's repository whose upstream
// lacks it; it is once that repository's upstream confirms it (HEAD) or
// one of its manifests references it, without another download.
func TestStoredBlobNeedsOwnConfirmation(t *testing.T) {
	upA := upstreamreg.Start(t, upstreamreg.Options{})
	upB := upstreamreg.Start(t, upstreamreg.Options{})
	upC := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(1 << 20)
	ld := digest.FromBytes(layer)
	upA.Push(t, "img", "v1", randomBytes(1000))
	upB.Push(t, "img", "v1", layer)
	upC.PushBlob(t, "img", layer) // C has the blob, no manifest references it
	upD := upstreamreg.Start(t, upstreamreg.Options{})
	md := upD.Push(t, "img", "v1", layer)
	e := newEnvRules(t, multiRules{"a": upA.Host, "b": upB.Host, "c": upC.Host, "d": upD.Host}, time.Hour, upA.Host, upB.Host, upC.Host, upD.Host)

	if r := get(t, e.srv.URL+"/v2/b/img/blobs/"+ld.String()); r.status != 200 || !bytes.Equal(r.body, layer) {
		t.Fatalf("B: %d", r.status)
	}
	e.cache.Wait()
	if r := get(t, e.srv.URL+"/v2/a/img/blobs/"+ld.String()); r.status != 404 {
		t.Fatalf("GET through A (upstream lacks it): %d %q, want 404", r.status, r.cache)
	}
	res, err := http.Head(e.srv.URL + "/v2/a/img/blobs/" + ld.String())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 404 {
		t.Fatalf("HEAD through A: %d, want 404", res.StatusCode)
	}
	if _, err := e.meta.BlobSize(context.Background(), "default", "a/img", ld); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("A linked: %v", err)
	}
	// C's upstream confirms with a HEAD: served from the store.
	if r := get(t, e.srv.URL+"/v2/c/img/blobs/"+ld.String()); r.status != 200 || r.cache != "hit" || !bytes.Equal(r.body, layer) {
		t.Fatalf("GET through C: %d %q", r.status, r.cache)
	}
	if n := upC.Requests(http.MethodGet, "/blobs/"); n != 0 {
		t.Fatalf("C downloaded the blob again (%d GETs)", n)
	}
	if n := upC.Requests(http.MethodHead, "/blobs/"+ld.String()); n != 1 {
		t.Fatalf("C's upstream HEADs = %d, want 1", n)
	}
	// D's manifest references it: no upstream request for the blob at all.
	if r := get(t, e.srv.URL+"/v2/d/img/manifests/"+md.String()); r.status != 200 {
		t.Fatalf("D manifest: %d", r.status)
	}
	if r := get(t, e.srv.URL+"/v2/d/img/blobs/"+ld.String()); r.status != 200 || r.cache != "hit" {
		t.Fatalf("GET through D: %d %q", r.status, r.cache)
	}
	if n := upD.Requests("", "/blobs/"+ld.String()); n != 0 {
		t.Fatalf("D's upstream asked for the blob %d times, want 0", n)
	}
}

// SyncManifest links a manifest stored for another repository only when
// this repository's upstream has it.
func TestSyncManifestNeedsOwnConfirmation(t *testing.T) {
	upA := upstreamreg.Start(t, upstreamreg.Options{})
	upB := upstreamreg.Start(t, upstreamreg.Options{})
	upA.Push(t, "img", "v1", randomBytes(1000))
	md := upB.Push(t, "img", "v1", randomBytes(1000))
	rules := multiRules{"a": upA.Host, "b": upB.Host}
	e := newEnvRules(t, rules, time.Hour, upA.Host, upB.Host)
	if r := get(t, e.srv.URL+"/v2/b/img/manifests/v1"); r.status != 200 || digest.FromBytes(r.body) != md {
		t.Fatalf("B manifest: %d", r.status)
	}
	ta, _ := rules.target("a/img")
	_, err := e.cache.SyncManifest(context.Background(), "default", ta, md, nil)
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("SyncManifest through A: %v, want not found", err)
	}
	if _, err := e.meta.GetManifest(context.Background(), "default", "a/img", md); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("A holds B's manifest: %v", err)
	}
	// B's own repository: found locally.
	tb, _ := rules.target("b/img")
	if sm, err := e.cache.SyncManifest(context.Background(), "default", tb, md, nil); err != nil || !sm.Stored || sm.Fetched {
		t.Fatalf("SyncManifest through B: %+v %v", sm, err)
	}
}

// Cross-repository mount from a rule-backed repository takes only what a
// pull from it could: a blob its upstream confirms, not one stored for
// another rule whose upstream it does not have.
func TestMountFromRuleBackedRepository(t *testing.T) {
	upA := upstreamreg.Start(t, upstreamreg.Options{})
	upB := upstreamreg.Start(t, upstreamreg.Options{})
	upC := upstreamreg.Start(t, upstreamreg.Options{})
	layer := randomBytes(1 << 20)
	ld := digest.FromBytes(layer)
	upA.Push(t, "img", "v1", randomBytes(1000))
	upB.Push(t, "img", "v1", layer)
	upC.PushBlob(t, "img", layer)
	e := newEnvRules(t, multiRules{"a": upA.Host, "b": upB.Host, "c": upC.Host}, time.Hour, upA.Host, upB.Host, upC.Host)
	if r := get(t, e.srv.URL+"/v2/b/img/blobs/"+ld.String()); r.status != 200 {
		t.Fatalf("B: %d", r.status)
	}
	e.cache.Wait()
	mount := func(from string) int {
		res, err := http.Post(e.srv.URL+"/v2/mine/app/blobs/uploads/?mount="+ld.String()+"&from="+from, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for _, tc := range []struct {
		from string
		want int
	}{
		{"a/img", http.StatusAccepted}, // A's upstream lacks it: an upload session instead
		{"b/img", http.StatusCreated},  // linked there
		{"c/img", http.StatusCreated},  // C's upstream confirms it
	} {
		if got := mount(tc.from); got != tc.want {
			t.Errorf("mount from %s: %d, want %d", tc.from, got, tc.want)
		}
	}
}
