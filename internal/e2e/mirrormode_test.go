package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Real clients against rule-backed repositories: tag listing of a
// never-pulled repository, regctl configured with arca as its mirror, and
// pushes beside the default mirror namespace.

// crane ls and skopeo list-tags of a never-pulled rule repository list
// every upstream tag (a paginating distribution v3 upstream, 200 tags).
func TestListTagsOfNeverPulledRuleRepository(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{Binary: upstreamreg.V3Binary(t)})
	im := newImage(t, 300, "amd64", 10<<10)
	seedImage(t, up, "library/many", "t000", im)
	want := []string{"t000"}
	for i := 1; i < 200; i++ {
		want = append(want, fmt.Sprintf("t%03d", i))
	}
	up.Tag(t, "library/many", digest.Digest(im.Digest()), want[1:]...)
	a := startCachingArca(t, []string{up.Host}, nil)
	a.cacheRule(t, "library-wild", up.Host+"/library/*", "lib/*")

	manifestGETs := up.Requests("GET", "/manifests/")
	if got := lines(crane(t).crane("ls", a.Ref("lib/many"))); !slices.Equal(got, want) {
		t.Errorf("crane ls of a never-pulled rule repository: %d tags, want the upstream's %d", len(got), len(want))
	}
	var st struct{ Tags []string }
	out := skopeo(t).skopeo("list-tags", "--tls-verify=false", "docker://"+a.Ref("lib/many"))
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("skopeo list-tags output %q: %v", out, err)
	}
	if !slices.Equal(st.Tags, want) {
		t.Errorf("skopeo list-tags: %d tags, want the upstream's %d", len(st.Tags), len(want))
	}
	// Listing pulled nothing, and no catalog was asked upstream.
	if n := up.Requests("GET", "/manifests/") - manifestGETs; n != 0 {
		t.Errorf("tag listing fetched %d manifests upstream", n)
	}
	if n := up.Requests("GET", "/v2/_catalog"); n != 0 {
		t.Errorf("upstream catalog asked %d times", n)
	}
}

// regctl with arca as the mirror of a registry no rule knows sends
// ns=<that registry>: arca serves by its own names and rules, as if ns
// were absent (manifests, blobs, referrers, tags), cold.
func TestRegctlMirrorMode(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 310, "amd64", 200<<10)
	seedImage(t, up, "library/app", "v1", im)
	subject := oci.Descriptor{MediaType: mtOCIManifest, Digest: digest.Digest(im.Digest()), Size: int64(len(im.Manifest))}
	sbom := up.PushReferrer(t, "library/app", subject, atSBOM, nil)
	a := startCachingArca(t, []string{up.Host}, nil)
	a.cacheRule(t, "library-wild", up.Host+"/library/*", "lib/*")

	c := newTool(t, "regctl")
	c.dir = t.TempDir()
	const primary = "registry.arca.invalid" // never resolves: only the mirror can answer
	c.run("registry", "set", "--tls", "disabled", a.Addr)
	// regctl pings the primary, fails, and keeps the setting (exit 1).
	if out, err := c.try("registry", "set", "--tls", "disabled", "--mirror", a.Addr, primary); err != nil && !strings.Contains(out, "configuration still updated") {
		t.Fatalf("regctl registry set --mirror: %v\n%s", err, out)
	}

	ref := primary + "/lib/app:v1"
	if got := strings.TrimSpace(c.run("image", "digest", ref)); got != im.Digest() {
		t.Errorf("regctl image digest through the mirror = %s, want %s", got, im.Digest())
	}
	layout := t.TempDir() + "/out"
	c.run("image", "copy", ref, "ocidir://"+layout+":v1")
	checkLayoutHas(t, layout, im)
	// The upstream's tags: v1 and the referrers tag-schema fallback tag.
	wantTags := []string{oci.ReferrersTag(subject.Digest), "v1"}
	if tags := lines(c.run("tag", "ls", primary+"/lib/app")); !slices.Equal(tags, wantTags) {
		t.Errorf("regctl tag ls through the mirror = %v, want %v", tags, wantTags)
	}
	raw := c.run("artifact", "list", "--format", "{{json .}}", ref)
	var list struct {
		Descriptors []descriptor `json:"descriptors"`
	}
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		t.Fatalf("regctl artifact list through the mirror %q: %v", raw, err)
	}
	if len(list.Descriptors) != 1 || list.Descriptors[0].Digest != sbom.Digest.String() {
		t.Errorf("regctl artifact list through the mirror = %s, want the upstream's referrer %s", raw, sbom.Digest)
	}
	a.checkBlob(t, "lib/app", im.blobs()[0])
}

// With the default --mirror-namespace docker.io and the README's rule
// docker.io/library/* => dockerhub/*, crane pushes to new single-segment
// repositories, which are ours; -r <the --addr host> names the default
// registry in the CLI.
func TestPushSingleSegmentWithMirrorNamespace(t *testing.T) {
	a := startCachingArca(t, nil, []string{"ARCA_E2E_HUB_USER=u", "ARCA_E2E_HUB_PASS=p"})
	a.cli(t, "credential-set", "create", "-r", a.Addr, "-n", "hubcreds", "-l", "docker.io",
		"-u", "env://ARCA_E2E_HUB_USER", "-p", "env://ARCA_E2E_HUB_PASS", "-o", "none")
	a.cli(t, "cache", "create", "-r", a.Addr, "-n", "dockerhub-rule", "-s", "docker.io/library/*", "-t", "dockerhub/*", "-c", "hubcreds", "-o", "none")
	if out := a.cli(t, "cache", "list", "-r", a.Addr, "-o", "tsv"); !strings.Contains(out, "dockerhub-rule") {
		t.Errorf("cache list -r %s: %q", a.Addr, out)
	}

	c := crane(t)
	im := newImage(t, 320, "amd64", 64<<10)
	c.crane("push", im.writeLayout(t), a.Ref("myapp:v1"))
	if got := c.crane("digest", a.Ref("myapp:v1")); got != im.Digest() {
		t.Errorf("crane digest myapp:v1 = %s, want %s", got, im.Digest())
	}
	for _, b := range im.blobs() {
		a.checkBlob(t, "myapp", b)
	}
	c.crane("delete", a.Ref("myapp@"+im.Digest()))
}
