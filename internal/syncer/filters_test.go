package syncer_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/syncer"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// mixedTags are 200 tag names of the shapes real repositories have.
func mixedTags() []string {
	var tags []string
	for i := range 60 {
		tags = append(tags, fmt.Sprintf("1.%d.0", i))
	}
	for i := range 40 {
		tags = append(tags, fmt.Sprintf("1.%d.0-alpine", i))
	}
	for i := range 40 {
		tags = append(tags, fmt.Sprintf("2.%d-bookworm", i))
	}
	for i := range 30 {
		tags = append(tags, fmt.Sprintf("nightly-%d", 20240100+i))
	}
	for i := range 20 {
		tags = append(tags, fmt.Sprintf("Release-%d", i))
	}
	return append(tags, "latest", "stable", "edge", "alpine", "bookworm-slim", "1-alpine-slim", "main", "dev", "test-alpine", "ALPINE")
}

// TestTagFilters seeds 200 tags over 10 images and checks, for each tag
// filter, the dry-run estimate and then exactly what arca holds.
func TestTagFilters(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	all := mixedTags()
	imageOf := seedMany(t, up, all)
	e := newEnv(t, up.Host)
	s, _ := e.newSyncer(syncer.Options{})

	cases := []struct {
		name, query string
		want        func(string) bool
	}{
		{"all-tags", "", func(string) bool { return true }},
		{"prefix-and-suffix", "Tags | where Name startswith '1.' and Name endswith '-alpine'", func(s string) bool {
			return strings.HasPrefix(s, "1.") && strings.HasSuffix(s, "-alpine")
		}},
		{"contains", "Tags | where Name contains 'alpine'", func(s string) bool { return strings.Contains(strings.ToLower(s), "alpine") }},
		{"equals", "Tags | where Name == 'latest'", func(s string) bool { return s == "latest" }},
		{"case-insensitive-prefix", "Tags | where Name startswith 'release';", func(s string) bool { return strings.HasPrefix(s, "Release-") }},
		{"all-four", "Tags | where Name startswith '1' and Name endswith 'slim' and Name contains 'alpine' and Name == '1-alpine-slim'",
			func(s string) bool { return s == "1-alpine-slim" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := rules.Rule{Name: "rule-" + c.name, Source: up.Host + "/many", Target: c.name, SyncMode: rules.ActiveSync,
				Filters: rules.Filters{Tags: c.query}}
			checkTagFilter(t, e, s, r, all, imageOf, c.want)
		})
	}

	// A second run of an unchanged repository costs HEADs only.
	headsBefore, getsBefore, blobsBefore := manifestRequests(up, http.MethodHead), manifestRequests(up, http.MethodGet), blobGETs(up)
	st := e.syncRule(s, "rule-all-tags")
	if st.Result != syncer.ResultSucceeded || st.TagsUnchanged != 200 || st.TagsSynced != 0 || st.BytesFetched != 0 {
		t.Fatalf("second run: %+v", st)
	}
	if got, want := sum(manifestRequests(up, http.MethodGet)), sum(getsBefore); got != want {
		t.Errorf("second run made %d manifest GETs, want none", got-want)
	}
	if got, want := sum(blobGETs(up)), sum(blobsBefore); got != want {
		t.Errorf("second run made %d blob GETs, want none", got-want)
	}
	if got, want := sum(manifestRequests(up, http.MethodHead)), sum(headsBefore)+200; got != want {
		t.Errorf("second run made %d manifest HEADs, want 200", got-sum(headsBefore))
	}
}

// seedMany pushes 10 small images to "many" and spreads the tags over them.
func seedMany(t *testing.T, up *upstreamreg.Registry, all []string) map[string]image {
	t.Helper()
	if len(all) != 200 {
		t.Fatalf("seed has %d tags", len(all))
	}
	var imgs []image
	for i := range 10 {
		imgs = append(imgs, pushImage(t, up, "many", "", &oci.Platform{OS: "linux", Architecture: "amd64"}, 1024+i))
	}
	imageOf := map[string]image{}
	tagsOf := make([][]string, len(imgs))
	for i, tag := range all {
		imageOf[tag] = imgs[i%len(imgs)]
		tagsOf[i%len(imgs)] = append(tagsOf[i%len(imgs)], tag)
	}
	for i, img := range imgs {
		up.Tag(t, "many", img.desc.Digest, tagsOf[i]...)
	}
	return imageOf
}

// checkTagFilter estimates rule r, syncs it, and checks that arca holds
// exactly the tags selects picks, their manifests and their blobs.
func checkTagFilter(t *testing.T, e *env, s *syncer.Syncer, r rules.Rule, all []string, imageOf map[string]image, selects func(string) bool) {
	t.Helper()
	var want []string
	var wantManifests, wantBlobs []digest.Digest
	for _, tag := range all {
		if selects(tag) {
			want = append(want, tag)
			wantManifests = append(wantManifests, imageOf[tag].desc.Digest)
			wantBlobs = append(wantBlobs, imageOf[tag].blobs...)
		}
	}
	est, err := s.Estimate(context.Background(), testRegistry, r)
	if err != nil {
		t.Fatal(err)
	}
	if est.Name != r.Name || est.TotalCount != 200 || est.FilteredCount != len(want) {
		t.Fatalf("estimate: %+v, want total 200, filtered %d", est, len(want))
	}
	var names []string
	for _, res := range est.Results {
		names = append(names, res.Name)
	}
	same(t, "estimate results", names, want)
	if got := e.repos(); len(got) != 0 && contains(got, r.Target) {
		t.Fatalf("a dry run stored %s", r.Target)
	}

	e.putRule(r)
	st := e.syncRule(s, r.Name)
	if st.Result != syncer.ResultSucceeded || st.TagsSynced != len(want) || st.TagsFailed != 0 {
		t.Fatalf("status: %+v", st)
	}
	same(t, "tags held", e.tags(r.Target), want)
	same(t, "manifests held", e.manifests(r.Target), digests(wantManifests...))
	same(t, "blobs held", e.blobsOf(r.Target), digests(wantBlobs...))
	if st.BytesFetched <= 0 && len(want) == 200 {
		t.Fatalf("no bytes fetched: %+v", st)
	}
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// TestPlatforms stores a three-platform index exactly as served but only
// the selected platforms' manifests and blobs; a filtered-out platform is
// then pulled through.
func TestPlatforms(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	amd := pushImage(t, up, "multi", "", &oci.Platform{OS: "linux", Architecture: "amd64"}, 4096)
	arm64 := pushImage(t, up, "multi", "", &oci.Platform{OS: "linux", Architecture: "arm64"}, 4097)
	armv7 := pushImage(t, up, "multi", "", &oci.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, 4098)
	idx := up.PushIndex(t, "multi", "v1", amd.desc, arm64.desc, armv7.desc)
	e := newEnv(t, up.Host)
	s, _ := e.newSyncer(syncer.Options{})

	e.putRule(rules.Rule{Name: "multi-two", Source: up.Host + "/multi", Target: "multi",
		Filters: rules.Filters{Platforms: []string{"linux/amd64", "linux/arm64"}}})
	if st := e.syncRule(s, "multi-two"); st.Result != syncer.ResultSucceeded || st.TagsSynced != 1 {
		t.Fatalf("status: %+v", st)
	}
	same(t, "tags", e.tags("multi"), []string{"v1"})
	same(t, "manifests", e.manifests("multi"), digests(idx.Digest, amd.desc.Digest, arm64.desc.Digest))
	same(t, "blobs", e.blobsOf("multi"), digests(append(append([]digest.Digest{}, amd.blobs...), arm64.blobs...)...))

	// The index is served byte for byte; the filtered-out platform pulls through.
	srv := e.handler()
	body, hdr := get(t, srv.URL+"/v2/multi/manifests/v1", oci.MediaTypeOCIIndex)
	if digest.FromBytes(body) != idx.Digest || hdr.Get("X-Arca-Cache") != "hit" {
		t.Fatalf("index served as %s (%s), want %s from cache", digest.FromBytes(body), hdr.Get("X-Arca-Cache"), idx.Digest)
	}
	_, hdr = get(t, srv.URL+"/v2/multi/manifests/"+armv7.desc.Digest.String(), oci.MediaTypeOCIManifest)
	if hdr.Get("X-Arca-Cache") != "miss" {
		t.Fatalf("arm/v7 manifest: X-Arca-Cache %q, want miss (pull-through)", hdr.Get("X-Arca-Cache"))
	}
	for _, b := range armv7.blobs {
		blob, hdr := get(t, srv.URL+"/v2/multi/blobs/"+b.String(), "")
		if digest.FromBytes(blob) != b || hdr.Get("X-Arca-Cache") != "miss" {
			t.Fatalf("arm/v7 blob %s pulled through wrong (%s)", b, hdr.Get("X-Arca-Cache"))
		}
	}

	// The variant form selects arm/v7 alone. It was pulled through above
	// and content is shared by digest, so nothing is fetched again.
	e.putRule(rules.Rule{Name: "multi-armv7", Source: up.Host + "/multi", Target: "multi-arm",
		Filters: rules.Filters{Platforms: []string{"linux/arm/v7"}}})
	if st := e.syncRule(s, "multi-armv7"); st.TagsSynced != 1 || st.BytesFetched != 0 {
		t.Fatalf("status: %+v", st)
	}
	same(t, "arm manifests", e.manifests("multi-arm"), digests(idx.Digest, armv7.desc.Digest))
	same(t, "arm blobs", e.blobsOf("multi-arm"), digests(armv7.blobs...))
}

// TestImageTypes keeps or drops tags by their manifest media type.
func TestImageTypes(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	single := pushImage(t, up, "mixed", "single", &oci.Platform{OS: "linux", Architecture: "amd64"}, 512)
	child := pushImage(t, up, "mixed", "", &oci.Platform{OS: "linux", Architecture: "arm64"}, 513)
	idx := up.PushIndex(t, "mixed", "multi", child.desc)
	e := newEnv(t, up.Host)
	s, _ := e.newSyncer(syncer.Options{})

	e.putRule(rules.Rule{Name: "no-indexes", Source: up.Host + "/mixed", Target: "no-idx",
		Filters: rules.Filters{ImageTypes: &rules.KindFilter{Type: "exclude", Values: []string{oci.MediaTypeOCIIndex}}}})
	st := e.syncRule(s, "no-indexes")
	if st.TagsSynced != 1 || st.TagsExcluded != 1 {
		t.Fatalf("status: %+v", st)
	}
	same(t, "tags", e.tags("no-idx"), []string{"single"})
	same(t, "manifests", e.manifests("no-idx"), digests(single.desc.Digest))

	e.putRule(rules.Rule{Name: "only-indexes", Source: up.Host + "/mixed", Target: "only-idx",
		Filters: rules.Filters{ImageTypes: &rules.KindFilter{Type: "include", Values: []string{"Application/VND.oci.image.index.v1+json"}}}})
	e.syncRule(s, "only-indexes")
	same(t, "tags", e.tags("only-idx"), []string{"multi"})
	same(t, "manifests", e.manifests("only-idx"), digests(idx.Digest, child.desc.Digest))
	same(t, "blobs", e.blobsOf("only-idx"), digests(child.blobs...))
}

func get(t *testing.T, url, accept string) ([]byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v %s", url, res.StatusCode, err, body)
	}
	return body, res.Header
}
