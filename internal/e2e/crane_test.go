package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// crane runs crane against plain-http arca.
func crane(t testing.TB) *tool { return newTool(t, "crane") }

func (c *tool) crane(args ...string) string {
	c.t.Helper()
	return strings.TrimSpace(c.run(append([]string{"--insecure"}, args...)...))
}

func TestCranePushPullRoundTrip(t *testing.T) {
	a := startArca(t)
	c := crane(t)
	im := newImage(t, 1, "amd64", 1<<10, 300<<10, 2<<20)
	ref := a.Ref("a/b/c:v1")

	c.crane("push", im.writeLayout(t), ref)

	if got := c.crane("digest", ref); got != im.Digest() {
		t.Errorf("crane digest = %s, want %s", got, im.Digest())
	}
	if got := c.crane("manifest", ref); got != string(im.Manifest) {
		t.Errorf("crane manifest returned different bytes:\n got %s\nwant %s", got, im.Manifest)
	}
	if got := c.crane("manifest", a.Ref("a/b/c@"+im.Digest())); got != string(im.Manifest) {
		t.Errorf("crane manifest by digest returned different bytes")
	}
	out := filepath.Join(t.TempDir(), "pulled")
	c.crane("pull", "--format", "oci", ref, out)
	checkLayoutHas(t, out, im)
	// crane validate downloads every layer and checks digests and diff_ids.
	c.crane("validate", "--remote", ref)
	for _, b := range im.blobs() {
		a.checkBlob(t, "a/b/c", b)
	}

	// Copy to another repository: same digest, every blob readable there.
	c.crane("copy", ref, a.Ref("other/repo:copied"))
	if got := c.crane("digest", a.Ref("other/repo:copied")); got != im.Digest() {
		t.Errorf("after copy digest = %s, want %s", got, im.Digest())
	}
	for _, b := range im.blobs() {
		a.checkBlob(t, "other/repo", b)
	}

	repos := lines(c.crane("catalog", a.Addr))
	for _, want := range []string{"a/b/c", "other/repo"} {
		if !slices.Contains(repos, want) {
			t.Errorf("crane catalog = %v, missing %s", repos, want)
		}
	}
}

func TestCraneMultiPlatformIndex(t *testing.T) {
	a := startArca(t)
	c := crane(t)
	amd := newImage(t, 10, "amd64", 64<<10)
	arm := newImage(t, 11, "arm64", 96<<10)
	c.crane("push", amd.writeLayout(t), a.Ref("multi/app:amd64"))
	c.crane("push", arm.writeLayout(t), a.Ref("multi/app:arm64"))

	idxRef := a.Ref("multi/app:latest")
	c.crane("index", "append", "-m", a.Ref("multi/app:amd64"), "-m", a.Ref("multi/app:arm64"), "-t", idxRef)

	var idx manifest
	raw := c.crane("manifest", idxRef)
	if err := json.Unmarshal([]byte(raw), &idx); err != nil {
		t.Fatalf("index manifest %q: %v", raw, err)
	}
	if idx.MediaType != mtOCIIndex || len(idx.Manifests) != 2 {
		t.Fatalf("index = %s", raw)
	}
	got := map[string]string{}
	for _, m := range idx.Manifests {
		if m.Platform != nil {
			got[m.Platform.Architecture] = m.Digest
		}
	}
	if got["amd64"] != amd.Digest() || got["arm64"] != arm.Digest() {
		t.Errorf("index children = %v, want amd64=%s arm64=%s", got, amd.Digest(), arm.Digest())
	}
	if d := c.crane("digest", idxRef); d != sha([]byte(raw)) {
		t.Errorf("index digest %s does not match its bytes (%s)", d, sha([]byte(raw)))
	}
	if d := c.crane("digest", "--platform", "linux/arm64", idxRef); d != arm.Digest() {
		t.Errorf("digest --platform linux/arm64 = %s, want %s", d, arm.Digest())
	}
	out := filepath.Join(t.TempDir(), "arm")
	c.crane("pull", "--platform", "linux/arm64", "--format", "oci", idxRef, out)
	checkLayoutHas(t, out, arm)

	// The index is served with its media type and digest header.
	r := do(t, "GET", a.URL()+"/v2/multi/app/manifests/latest", map[string]string{"Accept": mtOCIIndex}, nil)
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != mtOCIIndex ||
		r.Header.Get("Docker-Content-Digest") != sha(r.Body) {
		t.Errorf("GET index: %s", r)
	}
}

func TestCraneDeleteAndTag(t *testing.T) {
	a := startArca(t)
	c := crane(t)
	keep := newImage(t, 20, "amd64", 10<<10)
	gone := newImage(t, 21, "amd64", 10<<10)
	c.crane("push", keep.writeLayout(t), a.Ref("del/repo:keep"))
	c.crane("push", gone.writeLayout(t), a.Ref("del/repo:gone"))
	c.crane("tag", a.Ref("del/repo:keep"), "extra")
	if d := c.crane("digest", a.Ref("del/repo:extra")); d != keep.Digest() {
		t.Fatalf("crane tag: extra -> %s, want %s", d, keep.Digest())
	}

	// Delete by digest: the manifest and the tag that named it are gone.
	c.crane("delete", a.Ref("del/repo@"+gone.Digest()))
	r := do(t, "GET", a.URL()+"/v2/del/repo/manifests/"+gone.Digest(), nil, nil)
	if r.Status != http.StatusNotFound || !r.hasCode("MANIFEST_UNKNOWN") {
		t.Errorf("GET deleted manifest: %s, want 404 MANIFEST_UNKNOWN", r)
	}
	if _, err := c.try("--insecure", "manifest", a.Ref("del/repo:gone")); err == nil {
		t.Errorf("tag of a deleted manifest still resolves")
	}

	// Delete a tag: the manifest stays, reachable by digest and other tags.
	c.crane("delete", a.Ref("del/repo:extra"))
	tags := lines(c.crane("ls", a.Ref("del/repo")))
	if !slices.Equal(tags, []string{"keep"}) {
		t.Errorf("tags after deletes = %v, want [keep]", tags)
	}
	if d := c.crane("digest", a.Ref("del/repo@"+keep.Digest())); d != keep.Digest() {
		t.Errorf("kept manifest by digest = %s", d)
	}
}

func TestCraneTagPagination(t *testing.T) {
	a := startArca(t)
	c := crane(t)
	im := newImage(t, 30, "amd64", 4<<10)
	const repo = "paged/repo"
	for _, b := range im.blobs() {
		a.pushBlob(t, repo, b)
	}
	// More tags than crane's page size (1000), so `crane ls` must follow
	// the Link header to see them all.
	const nTags = 1010
	var want []string
	for i := range nTags {
		want = append(want, fmt.Sprintf("t%04d", i))
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for _, tag := range want {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if r := a.pushManifest(t, repo, tag, mtOCIManifest, im.Manifest); r.Status != http.StatusCreated {
				t.Errorf("PUT manifest %s: %s", tag, r)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	got := lines(c.crane("ls", a.Ref(repo)))
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("crane ls returned %d tags, want %d", len(got), len(want))
	}

	paged, pages := a.tagsPaged(t, repo, 100)
	if !slices.Equal(paged, want) {
		t.Errorf("paged tags (n=100): %d tags, sorted=%v; want %d in lexical order",
			len(paged), slices.IsSorted(paged), len(want))
	}
	if pages != 11 {
		t.Errorf("n=100 over %d tags took %d pages, want 11", nTags, pages)
	}
	r := do(t, "GET", a.URL()+"/v2/"+repo+"/tags/list?n=3&last=t0500", nil, nil)
	var body struct{ Tags []string }
	_ = json.Unmarshal(r.Body, &body)
	if r.Status != http.StatusOK || !slices.Equal(body.Tags, []string{"t0501", "t0502", "t0503"}) {
		t.Errorf("tags/list?n=3&last=t0500: %s", r)
	}
}

func TestCatalogPagination(t *testing.T) {
	a := startArca(t)
	im := newImage(t, 40, "amd64", 1<<10)
	want := []string{"a", "a/b", "a/b/c", "b-c/d_e", "z.z/y"}
	for _, repo := range want {
		a.pushImage(t, repo, "v1", im)
	}
	got := lines(crane(t).crane("catalog", a.Addr))
	if !slices.Equal(got, want) {
		t.Errorf("crane catalog = %v, want %v", got, want)
	}
	next := a.URL() + "/v2/_catalog?n=2"
	var paged []string
	for pages := 0; next != ""; pages++ {
		if pages > len(want) {
			t.Fatal("catalog pagination does not end")
		}
		r := do(t, "GET", next, nil, nil)
		var body struct{ Repositories []string }
		if r.Status != http.StatusOK || json.Unmarshal(r.Body, &body) != nil || len(body.Repositories) > 2 {
			t.Fatalf("GET %s: %s", next, r)
		}
		paged = append(paged, body.Repositories...)
		next = ""
		if l := r.Header.Get("Link"); l != "" {
			next = a.resolve(t, parseLink(t, l))
		}
	}
	if !slices.Equal(paged, want) {
		t.Errorf("paged catalog = %v, want %v", paged, want)
	}
}
