package cache_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

func listTags(t *testing.T, url string) (tagList, *http.Response) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var tl tagList
	if res.StatusCode == 200 {
		if err := json.NewDecoder(res.Body).Decode(&tl); err != nil {
			t.Fatal(err)
		}
	}
	return tl, res
}

// A rule-backed repository lists the upstream's tags (every page of a
// paginating upstream) with ours, paged by our own n/last; when the
// upstream fails, our tags, marked stale.
func TestTagsUnionOfUpstreamAndLocal(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{Binary: upstreamreg.V3Binary(t)})
	d := up.Push(t, "lib/app", "v000", []byte("layer"))
	var want []string
	for i := 1; i < 200; i++ {
		want = append(want, fmt.Sprintf("v%03d", i))
	}
	up.Tag(t, "lib/app", d, want...)
	want = append([]string{"v000"}, want...)
	e := newEnv(t, up.Host, time.Minute, nil)
	base := e.srv.URL + "/v2/cached/lib/app/tags/list"

	// Never pulled: every upstream tag (the client pages by 64).
	tl, res := listTags(t, base)
	if !slices.Equal(tl.Tags, want) || tl.Name != "cached/lib/app" || res.Header.Get("X-Arca-Cache") != "miss" {
		t.Fatalf("never-pulled tags: %d tags %v.., X-Arca-Cache %q; want the upstream's 200", len(tl.Tags), tl.Tags[:min(3, len(tl.Tags))], res.Header.Get("X-Arca-Cache"))
	}
	// Our pagination over the union, following Link: one upstream listing
	// (4 upstream pages of 64) serves every page.
	var paged []string
	next := base + "?n=70"
	upPages := up.Requests("GET", "/tags/list")
	for pages := 0; next != ""; pages++ {
		if pages > 10 {
			t.Fatal("pagination does not end")
		}
		tl, res = listTags(t, next)
		if c := res.Header.Get("X-Arca-Cache"); (pages == 0) != (c == "miss") || (pages > 0) != (c == "hit") {
			t.Errorf("page %d: X-Arca-Cache %q; want miss for the first page, hit for follow-ups", pages, c)
		}
		paged = append(paged, tl.Tags...)
		next = ""
		if l := res.Header.Get("Link"); l != "" {
			var path string
			if _, err := fmt.Sscanf(l, "<%s", &path); err != nil {
				t.Fatalf("Link %q: %v", l, err)
			}
			next = e.srv.URL + path[:len(path)-2] // drop `>;`
		}
	}
	if !slices.Equal(paged, want) {
		t.Fatalf("paged tags: %d, want %d in order", len(paged), len(want))
	}
	if n := up.Requests("GET", "/tags/list") - upPages; n != 4 {
		t.Errorf("paging through 3 pages made %d upstream tags/list requests, want 4 (one listing)", n)
	}

	// A tag held here only (pulled, then tagged locally) joins the union.
	if r := get(t, e.srv.URL+"/v2/cached/lib/app/manifests/v000"); r.status != 200 {
		t.Fatalf("pull v000: %d %s", r.status, r.body)
	}
	if err := e.cache.TagManifest(t.Context(), "default", "cached/lib/app", "zlocal", d); err != nil {
		t.Fatal(err)
	}
	tl, _ = listTags(t, base)
	if len(tl.Tags) != 201 || tl.Tags[200] != "zlocal" {
		t.Fatalf("union: %d tags, last %q; want 201 ending with zlocal", len(tl.Tags), tl.Tags[len(tl.Tags)-1])
	}

	// The upstream down: our tags, stale.
	up.Stop()
	tl, res = listTags(t, base)
	if res.StatusCode != 200 || !slices.Equal(tl.Tags, []string{"v000", "zlocal"}) || res.Header.Get("X-Arca-Cache") != "stale" {
		t.Fatalf("upstream down: %d %v X-Arca-Cache %q; want [v000 zlocal] stale", res.StatusCode, tl.Tags, res.Header.Get("X-Arca-Cache"))
	}
}

// A repository the upstream does not have, with nothing cached, is
// NAME_UNKNOWN; no catalog is asked upstream, and only cached rule-backed
// repositories are in ours.
func TestTagsUpstreamNotFoundAndCatalog(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	up.Push(t, "lib/app", "v1", []byte("layer"))
	e := newEnv(t, up.Host, time.Minute, nil)
	if r := get(t, e.srv.URL+"/v2/cached/lib/absent/tags/list"); r.status != 404 {
		t.Fatalf("tags of a repository the upstream lacks: %d %s", r.status, r.body)
	}
	if r := get(t, e.srv.URL+"/v2/cached/lib/app/tags/list"); r.status != 200 {
		t.Fatalf("tags: %d %s", r.status, r.body)
	}
	if r := get(t, e.srv.URL+"/v2/_catalog"); r.status != 200 || string(r.body) != `{"repositories":[]}` {
		t.Fatalf("catalog before any pull: %d %s", r.status, r.body)
	}
	if r := get(t, e.srv.URL+"/v2/cached/lib/app/manifests/v1"); r.status != 200 {
		t.Fatalf("pull: %d %s", r.status, r.body)
	}
	if r := get(t, e.srv.URL+"/v2/_catalog"); string(r.body) != `{"repositories":["cached/lib/app"]}` {
		t.Fatalf("catalog after a pull: %s", r.body)
	}
	if n := up.Requests("GET", "/v2/_catalog"); n != 0 {
		t.Errorf("upstream catalog asked %d times", n)
	}
}
