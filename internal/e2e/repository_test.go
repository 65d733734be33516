package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// `arca repository` end to end: images pushed with crane into a closed
// arca, one pulled; the CLI (with the admin user's or a token's
// credentials) lists repositories, tags and manifests
// with their pull times, untags and deletes.
func TestRepositoryCommands(t *testing.T) {
	a := startClosedArca(t, "--pull-flush-interval", "200ms")
	host := a.Addr
	adminPW := a.adminPassword(t)
	admin := crane(t)
	admin.run("auth", "login", host, "-u", "default", "-p", adminPW)
	im1, im2, other := newImage(t, 81, "amd64", 16<<10), newImage(t, 82, "arm64", 8<<10), newImage(t, 83, "amd64", 4<<10)
	admin.crane("push", other.writeLayout(t), host+"/other/x:v1")
	time.Sleep(20 * time.Millisecond) // distinct update times
	admin.crane("push", im1.writeLayout(t), host+"/team/app:v1")
	time.Sleep(20 * time.Millisecond)
	admin.crane("tag", host+"/team/app:v1", "v2")
	time.Sleep(20 * time.Millisecond)
	admin.crane("push", im2.writeLayout(t), host+"/team/app:v3")

	// The admin user's credentials come first: a later -u/-p wins.
	repo := func(args ...string) string {
		t.Helper()
		return a.cli(t, append([]string{"repository", args[0], "-u", "default", "-p", adminPW}, args[1:]...)...)
	}
	strs := func(out string) []string {
		t.Helper()
		var v []string
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return v
	}
	type tag struct {
		Name, Digest, CreatedTime, LastUpdateTime, LastPulledTime string
		Signed                                                    bool
		ChangeableAttributes                                      map[string]bool
	}
	tags := func(args ...string) []tag {
		t.Helper()
		var v []tag
		if err := json.Unmarshal([]byte(repo(append([]string{"show-tags", "-n", "default", "--repository", "team/app", "--detail"}, args...)...)), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	// crane tag read v1 (a pull); v2 and v3 were only pushed.
	if ts := tags(); len(ts) != 3 || ts[1].LastPulledTime != "" || ts[2].LastPulledTime != "" || ts[0].Digest != im1.Digest() ||
		ts[1].Digest != im1.Digest() || ts[2].Digest != im2.Digest() || ts[0].CreatedTime == "" || !ts[0].ChangeableAttributes["deleteEnabled"] {
		t.Fatalf("tags before pulling v3: %+v", ts)
	}

	// A pull by tag shows, once flushed, on the tag, its manifest and the
	// repository.
	pulledAfter := time.Now().UTC()
	admin.crane("manifest", host+"/team/app:v3")
	var pulled tag
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if ts := tags(); ts[2].LastPulledTime != "" {
			pulled = ts[2]
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pull of team/app:v3 never showed as lastPulledTime")
		}
	}
	at, err := time.Parse(time.RFC3339Nano, pulled.LastPulledTime)
	if err != nil || at.Before(pulledAfter.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("lastPulledTime %q (%v), want about %v", pulled.LastPulledTime, err, pulledAfter)
	}
	if ts := tags(); ts[1].LastPulledTime != "" {
		t.Errorf("v2 was never pulled but has a lastPulledTime: %+v", ts)
	}

	var info struct {
		Registry, ImageName, CreatedTime, LastUpdateTime, LastPulledTime string
		ManifestCount, TagCount                                          int
	}
	if err := json.Unmarshal([]byte(repo("show", "-n", "default", "--repository", "team/app")), &info); err != nil {
		t.Fatal(err)
	}
	if info.Registry != host || info.ImageName != "team/app" || info.ManifestCount != 2 || info.TagCount != 3 ||
		info.LastPulledTime != pulled.LastPulledTime || info.CreatedTime == "" || info.LastUpdateTime < info.CreatedTime {
		t.Errorf("show: %+v", info)
	}
	var one struct{ Tag tag }
	if err := json.Unmarshal([]byte(repo("show", "-n", "default", "--image", "team/app:v3")), &one); err != nil || one.Tag.Digest != im2.Digest() || one.Tag.LastPulledTime != pulled.LastPulledTime {
		t.Errorf("show --image team/app:v3: %+v %v", one, err)
	}

	if got := strs(repo("list", "-n", "default")); !slices.Equal(got, []string{"other/x", "team/app"}) {
		t.Errorf("list: %v", got)
	}
	if got := strs(repo("list", "-n", "default", "--orderby", "time_desc")); !slices.Equal(got, []string{"team/app", "other/x"}) {
		t.Errorf("list --orderby time_desc: %v", got)
	}
	if got := strs(repo("list", "-n", "default", "--top", "1")); !slices.Equal(got, []string{"other/x"}) {
		t.Errorf("list --top 1: %v", got)
	}
	if got := strs(repo("show-tags", "-n", "default", "--repository", "team/app")); !slices.Equal(got, []string{"v1", "v2", "v3"}) {
		t.Errorf("show-tags: %v", got)
	}
	if got := strs(repo("show-tags", "-n", "default", "--repository", "team/app", "--orderby", "time_desc", "--top", "2")); !slices.Equal(got, []string{"v3", "v2"}) {
		t.Errorf("show-tags --orderby time_desc --top 2: %v", got)
	}
	if out := repo("show-tags", "-n", "default", "--repository", "team/app", "--detail", "-o", "table"); !strings.Contains(out, im1.Digest()) || !strings.Contains(out, pulled.LastPulledTime) {
		t.Errorf("show-tags --detail -o table:\n%s", out)
	}

	type manifest struct {
		Digest, MediaType, CreatedTime, LastUpdateTime, LastPulledTime, Timestamp string
		ImageSize                                                                 int
		Tags                                                                      []string
	}
	manifests := func(args ...string) []manifest {
		t.Helper()
		var v []manifest
		if err := json.Unmarshal([]byte(repo(append([]string{"show-manifests", "-n", "default", "--repository", "team/app"}, args...)...)), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	ms := manifests("--detail", "--orderby", "time_desc")
	if len(ms) != 2 || ms[0].Digest != im2.Digest() || ms[1].Digest != im1.Digest() || !slices.Equal(ms[1].Tags, []string{"v1", "v2"}) ||
		ms[1].ImageSize != im1.size() || ms[1].MediaType != im1.ManifestDesc.MediaType || ms[0].LastPulledTime != pulled.LastPulledTime {
		t.Errorf("show-manifests --detail --orderby time_desc: %+v", ms)
	}
	if ms := manifests("--orderby", "time_asc", "--top", "1"); len(ms) != 1 || ms[0].Digest != im1.Digest() || ms[0].Timestamp == "" || !slices.Equal(ms[0].Tags, []string{"v1", "v2"}) {
		t.Errorf("show-manifests --orderby time_asc --top 1: %+v", ms)
	}

	// A read-only token reads what its scope map covers and may not untag.
	pw := a.token(t, "ci-reader", "--repository", "team/*", "content/read", "metadata/read")
	asReader := []string{"-u", "ci-reader", "-p", pw}
	if got := strs(repo(append([]string{"list", "-n", "default"}, asReader...)...)); !slices.Equal(got, []string{"team/app"}) {
		t.Errorf("list as the reader: %v", got)
	}
	if got := strs(repo(append([]string{"show-tags", "-n", "default", "--repository", "team/app"}, asReader...)...)); len(got) != 3 {
		t.Errorf("show-tags as the reader: %v", got)
	}
	out, err := a.tryCLI(append([]string{"repository", "untag", "-n", "default", "--image", "team/app:v2"}, asReader...)...)
	refused(t, "untag as the reader", out, err)
	out, err = a.tryCLI(append([]string{"repository", "show", "-n", "default", "--repository", "other/x"}, asReader...)...)
	refused(t, "show outside the reader's scope", out, err)

	// Untag keeps the manifest; deleting an image by tag takes its
	// manifest and every tag of it; deleting the repository takes the rest.
	repo("untag", "-n", "default", "--image", "team/app:v2")
	if got := strs(repo("show-tags", "-n", "default", "--repository", "team/app")); !slices.Equal(got, []string{"v1", "v3"}) {
		t.Errorf("show-tags after untag: %v", got)
	}
	if got := admin.crane("digest", host+"/team/app:v1"); got != im1.Digest() {
		t.Errorf("v1 after untagging v2: %s", got)
	}
	repo("delete", "-n", "default", "--image", "team/app:v3", "--yes")
	if ms := manifests(); len(ms) != 1 || ms[0].Digest != im1.Digest() {
		t.Errorf("manifests after delete --image: %+v", ms)
	}
	var deleted struct {
		ManifestsDeleted []string
		TagsDeleted      []string
	}
	if err := json.Unmarshal([]byte(repo("delete", "-n", "default", "--repository", "team/app", "--yes")), &deleted); err != nil ||
		!slices.Equal(deleted.ManifestsDeleted, []string{im1.Digest()}) || !slices.Equal(deleted.TagsDeleted, []string{"v1"}) {
		t.Errorf("delete --repository: %+v %v", deleted, err)
	}
	if got := strs(repo("list", "-n", "default")); !slices.Equal(got, []string{"other/x"}) {
		t.Errorf("list after delete: %v", got)
	}
	out, err = a.tryCLI("repository", "show", "-n", "default", "--repository", "team/app", "-u", "default", "-p", adminPW)
	if err == nil || !strings.Contains(out, "(NAME_UNKNOWN)") {
		t.Errorf("show of the deleted repository: %v\n%s", err, out)
	}
	out, err = a.tryCLI("repository", "list", "-n", "default")
	if err == nil || !strings.Contains(out, "(UNAUTHORIZED)") || !strings.Contains(out, "--username") {
		t.Errorf("list without credentials on a closed server: %v\n%s", err, out)
	}
	if out, err := admin.try("--insecure", "manifest", host+"/team/app:v1"); err == nil {
		t.Errorf("the deleted repository still serves v1:\n%s", out)
	}
}

// Deleting a cache rule's repository drops the cached copy: it is no
// longer listed, and the next pull goes through to the upstream again.
// (The server is open, so the CLI goes without credentials.)
func TestRepositoryDeleteCached(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 91, "amd64", 32<<10)
	seedImage(t, up, "library/web", "v1", im)
	a := startCachingArca(t, []string{up.Host}, nil, "--pull-flush-interval", "200ms")
	a.cacheRule(t, "library", up.Host+"/library/*", "lib/*")
	if got := cacheResult(t, a, "lib/web", "v1"); got != "miss" {
		t.Fatalf("first pull: %q, want a miss", got)
	}
	if got := cacheResult(t, a, "lib/web", "v1"); got != "hit" {
		t.Fatalf("second pull: %q, want a hit", got)
	}
	var tags []struct{ Name, Digest string }
	if err := json.Unmarshal([]byte(a.cli(t, "repository", "show-tags", "-n", "default", "--repository", "lib/web", "--detail")), &tags); err != nil ||
		len(tags) != 1 || tags[0].Name != "v1" || tags[0].Digest != im.Digest() {
		t.Fatalf("cached tags: %+v %v", tags, err)
	}
	var deleted struct{ ManifestsDeleted, TagsDeleted []string }
	if err := json.Unmarshal([]byte(a.cli(t, "repository", "delete", "-n", "default", "--repository", "lib/web", "--yes")), &deleted); err != nil ||
		len(deleted.ManifestsDeleted) != 1 || deleted.ManifestsDeleted[0] != im.Digest() {
		t.Fatalf("delete: %+v %v", deleted, err)
	}
	if out := a.cli(t, "repository", "list", "-n", "default"); strings.Contains(out, "lib/web") {
		t.Errorf("list after delete: %s", out)
	}
	before := upstreamGETs(up, "/library/web/manifests/")
	if got := cacheResult(t, a, "lib/web", "v1"); got != "miss" {
		t.Errorf("pull after delete: %q, want a miss", got)
	}
	if upstreamGETs(up, "/library/web/manifests/") != before+1 {
		t.Error("the deleted repository's manifest was not fetched from the upstream again")
	}
	// A pull-through stores the manifest before the client fetches the
	// config: no platform yet. Once crane pulled the image, the listing
	// describes it from the config.
	platform := func() string {
		t.Helper()
		var m struct {
			Manifest struct{ Architecture, OS, ConfigMediaType string }
		}
		if err := json.Unmarshal([]byte(a.cli(t, "repository", "show", "-n", "default", "--image", "lib/web@"+im.Digest())), &m); err != nil {
			t.Fatal(err)
		}
		return m.Manifest.OS + "/" + m.Manifest.Architecture + " " + m.Manifest.ConfigMediaType
	}
	if got := platform(); got != "/ "+mtOCIConfig {
		t.Errorf("before the config was fetched: %q", got)
	}
	c := crane(t)
	c.crane("pull", "--format", "oci", a.Ref("lib/web:v1"), t.TempDir()+"/web")
	// The cache commits a fetched blob once its last byte went to the
	// client: the config may land just after crane is done.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got := platform()
		if got == "linux/amd64 "+mtOCIConfig {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after crane pull: %q, want linux/amd64", got)
		}
	}
}

// show-manifests shows a manifest's platform, config media type and size,
// an index's children with their platforms, and whether a signature
// refers to it: a notation signature attached with oras, or a cosign
// signature under its legacy .sig tag. An SBOM does not sign.
func TestRepositoryManifestAttributes(t *testing.T) {
	a := startClosedArca(t)
	host := a.Addr
	adminPW := a.adminPassword(t)
	cr := crane(t)
	cr.run("auth", "login", host, "-u", "default", "-p", adminPW)
	amd, arm := newImage(t, 84, "amd64", 4<<10), newImage(t, 85, "arm64", 2<<10)
	cr.crane("push", amd.writeLayout(t), host+"/team/multi:amd64")
	cr.crane("push", arm.writeLayout(t), host+"/team/multi:arm64")
	cr.crane("index", "append", "-m", host+"/team/multi:amd64", "-m", host+"/team/multi:arm64", "-t", host+"/team/multi:v1")
	index := cr.crane("digest", host+"/team/multi:v1")

	or := oras(t)
	or.oras("login", host, "-u", "default", "-p", adminPW)
	or.writeFile("sig.jws", []byte("not really a JWS"))
	or.writeFile("sbom.json", []byte(`{"packages":[]}`))
	or.writeFile("payload.json", []byte(`{"critical":{}}`))
	or.oras("attach", "--artifact-type", "application/vnd.cncf.notary.signature", host+"/team/multi:v1", "sig.jws:application/jose+json")
	or.oras("attach", "--artifact-type", "application/spdx+json", host+"/team/multi:arm64", "sbom.json:application/spdx+json")
	legacyTag := strings.ReplaceAll(amd.Digest(), ":", "-") + ".sig"
	or.oras("push", host+"/team/multi:"+legacyTag, "payload.json:application/vnd.dev.cosign.simplesigning.v1+json")

	repo := func(args ...string) string {
		t.Helper()
		return a.cli(t, append([]string{"repository", args[0], "-n", "default", "-u", "default", "-p", adminPW}, args[1:]...)...)
	}
	type reference struct{ Digest, Architecture, OS string }
	type manifest struct {
		Digest, MediaType, ConfigMediaType, Architecture, OS string
		ImageSize                                            int
		References                                           []reference
		Tags                                                 []string
		Signed                                               bool
	}
	var ms []manifest
	if err := json.Unmarshal([]byte(repo("show-manifests", "--repository", "team/multi", "--detail")), &ms); err != nil {
		t.Fatal(err)
	}
	byDigest := map[string]manifest{}
	for _, m := range ms {
		byDigest[m.Digest] = m
	}
	if len(ms) != 6 {
		t.Errorf("%d manifests (two images, the index, a signature, an SBOM, a legacy signature), want 6: %+v", len(ms), ms)
	}
	for _, c := range []struct {
		im     *testImage
		signed bool
	}{{amd, true}, {arm, false}} {
		m := byDigest[c.im.Digest()]
		if m.Architecture != c.im.Arch || m.OS != "linux" || m.ConfigMediaType != mtOCIConfig || m.MediaType != mtOCIManifest ||
			m.ImageSize != c.im.size() || m.Signed != c.signed || len(m.References) != 0 {
			t.Errorf("image %s: %+v, want signed=%v", c.im.Arch, m, c.signed)
		}
	}
	want := []reference{{amd.Digest(), "amd64", "linux"}, {arm.Digest(), "arm64", "linux"}}
	if m := byDigest[index]; !slices.Equal(m.References, want) || m.Architecture != "" || m.ConfigMediaType != "" || !m.Signed ||
		!slices.Equal(m.Tags, []string{"v1"}) || !oci.IsIndex(m.MediaType) {
		t.Errorf("index: %+v, want references %+v and signed", m, want)
	}

	var shown struct {
		ImageName string
		Manifest  manifest
	}
	if err := json.Unmarshal([]byte(repo("show", "--image", "team/multi@"+arm.Digest())), &shown); err != nil ||
		shown.ImageName != "team/multi" || shown.Manifest.Architecture != "arm64" || shown.Manifest.ImageSize != arm.size() {
		t.Errorf("show --image team/multi@<arm64>: %+v %v", shown, err)
	}
	out, err := a.tryCLI("repository", "show", "-n", "default", "-u", "default", "-p", adminPW, "--image", "team/multi@"+sha([]byte("none")))
	if err == nil || !strings.Contains(out, "(MANIFEST_UNKNOWN)") {
		t.Errorf("show of an unknown digest: %v\n%s", err, out)
	}
	if out := repo("show-manifests", "--repository", "team/multi", "--detail", "-o", "table"); !strings.Contains(out, "arm64") || !strings.Contains(out, "Architecture") {
		t.Errorf("show-manifests --detail -o table:\n%s", out)
	}

	var tags []struct {
		Name   string
		Signed bool
	}
	if err := json.Unmarshal([]byte(repo("show-tags", "--repository", "team/multi", "--detail")), &tags); err != nil {
		t.Fatal(err)
	}
	for _, tg := range tags {
		if want := tg.Name == "v1" || tg.Name == "amd64"; tg.Signed != want {
			t.Errorf("tag %s signed=%v, want %v", tg.Name, tg.Signed, want)
		}
	}
	var one struct{ Tag struct{ Signed bool } }
	if err := json.Unmarshal([]byte(repo("show", "--image", "team/multi:v1")), &one); err != nil || !one.Tag.Signed {
		t.Errorf("show --image team/multi:v1: %+v %v", one, err)
	}

	// metadata_read is needed for a manifest as for the listings.
	pw := a.token(t, "puller", "--repository", "team/multi", "content/read")
	out, err = a.tryCLI("repository", "show", "-n", "default", "-u", "puller", "-p", pw, "--image", "team/multi@"+arm.Digest())
	refused(t, "show --image by digest without metadata/read", out, err)
}

// A platform's variant (arm/v6, arm/v7) is recorded when an image or an
// index is stored and shown wherever its platform is: `arca repository
// show-manifests --detail` (from /acr/v1/{repo}/_manifests, as "variant"
// beside ACR's architecture and os, on the image and on each reference of
// the index) and the portal's Repositories page (os/arch/variant).
func TestManifestPlatformVariant(t *testing.T) {
	a := startClosedArca(t)
	host := a.Addr
	adminPW := a.adminPassword(t)
	cr := crane(t)
	cr.run("auth", "login", host, "-u", "default", "-p", adminPW)
	v6 := newPlatformImage(t, 86, platform{OS: "linux", Architecture: "arm", Variant: "v6"}, 2<<10)
	v7 := newPlatformImage(t, 87, platform{OS: "linux", Architecture: "arm", Variant: "v7"}, 3<<10)
	cr.crane("push", v6.writeLayout(t), host+"/team/arm:v6")
	cr.crane("push", v7.writeLayout(t), host+"/team/arm:v7")
	cr.crane("index", "append", "-m", host+"/team/arm:v6", "-m", host+"/team/arm:v7", "-t", host+"/team/arm:multi")
	index := cr.crane("digest", host+"/team/arm:multi")

	type reference struct{ Digest, Architecture, OS, Variant string }
	var ms []struct {
		Digest, Architecture, OS, Variant string
		References                        []reference
	}
	out := a.cli(t, "repository", "show-manifests", "-n", "default", "-u", "default", "-p", adminPW, "--repository", "team/arm", "--detail")
	if err := json.Unmarshal([]byte(out), &ms); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, m := range ms {
		got[m.Digest] = m.OS + "/" + m.Architecture + "/" + m.Variant
		if m.Digest == index {
			want := []reference{{v6.Digest(), "arm", "linux", "v6"}, {v7.Digest(), "arm", "linux", "v7"}}
			if !slices.Equal(m.References, want) {
				t.Errorf("index references %+v, want %+v", m.References, want)
			}
		}
	}
	if got[v6.Digest()] != "linux/arm/v6" || got[v7.Digest()] != "linux/arm/v7" || got[index] != "//" {
		t.Errorf("show-manifests --detail platforms %v\n%s", got, out)
	}
	if out := a.cli(t, "repository", "show-manifests", "-n", "default", "-u", "default", "-p", adminPW, "--repository", "team/arm", "--detail", "-o", "table"); !strings.Contains(out, "Variant") || !strings.Contains(out, "v7") {
		t.Errorf("show-manifests --detail -o table has no variant:\n%s", out)
	}

	// The portal: each tag of the repository with its platforms.
	jar, _ := cookiejar.New(nil)
	cl := &http.Client{Jar: jar}
	portalSignIn(t, cl, a.URL(), "").Body.Close()
	resp, err := cl.Get(a.URL() + "/portal/repositories")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("repositories page: %d\n%s", resp.StatusCode, page)
	}
	// Tags v6, v7 and multi (whose children are v6 and v7).
	for p, n := range map[string]int{"linux/arm/v6": 2, "linux/arm/v7": 2} {
		if c := strings.Count(string(page), `data-platform="`+p+`"`); c != n {
			t.Errorf("repositories page shows %s %d times, want %d", p, c, n)
		}
	}
	if strings.Contains(string(page), `data-platform="linux/arm"`) {
		t.Errorf("repositories page shows linux/arm without its variant")
	}
}
