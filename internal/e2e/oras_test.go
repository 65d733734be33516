package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const (
	atTest = "application/vnd.arca.test"
	atSig  = "application/vnd.arca.signature"
	atSBOM = "application/vnd.arca.sbom+json"
)

// oras runs oras in a scratch working directory (it reads and writes files
// by relative path).
func oras(t testing.TB) *tool {
	c := newTool(t, "oras")
	c.dir = t.TempDir()
	return c
}

func (c *tool) oras(args ...string) string {
	c.t.Helper()
	return c.run(append(args, "--plain-http")...)
}

func (c *tool) writeFile(name string, b []byte) {
	writeFile(c.t, filepath.Join(c.dir, name), b)
}

func (c *tool) readFile(name string) []byte {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, name))
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

// orasNode is `oras discover --format json` output.
type orasNode struct {
	Digest       string     `json:"digest"`
	MediaType    string     `json:"mediaType"`
	ArtifactType string     `json:"artifactType"`
	Referrers    []orasNode `json:"referrers"`
}

func TestOrasPushPull(t *testing.T) {
	a := startArca(t)
	c := oras(t)
	text := []byte("hello from arca\n")
	bin := randomBytes(1, 1<<20)
	c.writeFile("a.txt", text)
	c.writeFile("b.bin", bin)
	ref := a.Ref("artifacts/things:v1")
	c.oras("push", "--artifact-type", atTest, "--export-manifest", "pushed.json", ref,
		"a.txt:text/plain", "b.bin:application/octet-stream")
	pushed := c.readFile("pushed.json")

	r := do(t, "GET", a.URL()+"/v2/artifacts/things/manifests/v1", map[string]string{"Accept": mtOCIManifest}, nil)
	if r.Status != http.StatusOK || !bytes.Equal(r.Body, pushed) || r.Header.Get("Docker-Content-Digest") != sha(pushed) {
		t.Fatalf("GET pushed manifest: %s\nwant body %s", r, pushed)
	}
	var m manifest
	_ = json.Unmarshal(pushed, &m)
	if m.ArtifactType != atTest {
		t.Errorf("pushed artifactType = %q", m.ArtifactType)
	}

	out := oras(t)
	out.oras("pull", "-o", ".", ref)
	if got := out.readFile("a.txt"); !bytes.Equal(got, text) {
		t.Errorf("pulled a.txt = %q, want %q", got, text)
	}
	if got := out.readFile("b.bin"); sha(got) != sha(bin) {
		t.Errorf("pulled b.bin digest %s, want %s", sha(got), sha(bin))
	}
	if got := strings.TrimSpace(c.oras("resolve", ref)); got != sha(pushed) {
		t.Errorf("oras resolve = %s, want %s", got, sha(pushed))
	}
}

func TestOrasAttachDiscover(t *testing.T) {
	a := startArca(t)
	const repo = "signed/app"
	im := newImage(t, 50, "amd64", 8<<10)
	a.pushImage(t, repo, "v1", im)
	ref := a.Ref(repo + ":v1")

	c := oras(t)
	sig := []byte("signature bytes " + im.Digest())
	sbom := []byte(`{"packages":[]}`)
	c.writeFile("sig.txt", sig)
	c.writeFile("sbom.json", sbom)
	// Default mode: oras picks the referrers API only if the registry
	// answers the subject PUT with OCI-Subject; the tag check below fails
	// if it fell back to the referrers tag scheme.
	c.oras("attach", "--artifact-type", atSig, "--export-manifest", "sig-manifest.json", ref, "sig.txt:text/plain")
	c.oras("attach", "--distribution-spec", "v1.1-referrers-api", "--artifact-type", atSBOM,
		"--export-manifest", "sbom-manifest.json", ref, "sbom.json:application/json")
	sigDigest := sha(c.readFile("sig-manifest.json"))
	sbomDigest := sha(c.readFile("sbom-manifest.json"))

	var root orasNode
	raw := c.oras("discover", "--distribution-spec", "v1.1-referrers-api", "--format", "json", ref)
	if err := json.Unmarshal([]byte(raw), &root); err != nil {
		t.Fatalf("discover output %q: %v", raw, err)
	}
	if root.Digest != im.Digest() {
		t.Errorf("discover root = %s, want %s", root.Digest, im.Digest())
	}
	got := map[string]string{}
	for _, n := range root.Referrers {
		got[n.Digest] = n.ArtifactType
	}
	want := map[string]string{sigDigest: atSig, sbomDigest: atSBOM}
	if len(got) != 2 || got[sigDigest] != atSig || got[sbomDigest] != atSBOM {
		t.Errorf("discover referrers = %v, want %v", got, want)
	}

	raw = c.oras("discover", "--distribution-spec", "v1.1-referrers-api", "--format", "json", "--artifact-type", atSig, ref)
	root = orasNode{}
	_ = json.Unmarshal([]byte(raw), &root)
	if len(root.Referrers) != 1 || root.Referrers[0].Digest != sigDigest {
		t.Errorf("discover --artifact-type %s = %s", atSig, raw)
	}

	tags, _ := a.tagsPaged(t, repo, 100)
	if !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("tags = %v: oras fell back to the referrers tag scheme (no OCI-Subject on PUT?)", tags)
	}

	out := oras(t)
	out.oras("pull", "-o", ".", a.Ref(repo+"@"+sigDigest))
	if got := out.readFile("sig.txt"); !bytes.Equal(got, sig) {
		t.Errorf("pulled signature %q, want %q", got, sig)
	}
}

// TestReferrersAPI checks the referrers endpoint directly: OCI-Subject on
// PUT, the artifactType filter and its header, and the empty index.
func TestReferrersAPI(t *testing.T) {
	a := startArca(t)
	const repo = "ref/api"
	im := newImage(t, 60, "amd64", 1<<10)
	a.pushImage(t, repo, "v1", im)
	subject := im.ManifestDesc
	subject.Platform = nil

	empty := []byte("{}")
	emptyDesc := descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: sha(empty), Size: 2}
	a.pushBlob(t, repo, empty)
	var digests []string
	for _, at := range []string{atSig, atSBOM, atSig} {
		layer := randomBytes(uint64(len(digests)), 100)
		a.pushBlob(t, repo, layer)
		m := manifest{SchemaVersion: 2, MediaType: mtOCIManifest, ArtifactType: at, Config: &emptyDesc,
			Layers:  []descriptor{{MediaType: "application/octet-stream", Digest: sha(layer), Size: 100}},
			Subject: &subject}
		b := mustJSON(t, m)
		r := a.pushManifest(t, repo, sha(b), mtOCIManifest, b)
		if r.Status != http.StatusCreated || r.Header.Get("OCI-Subject") != im.Digest() {
			t.Errorf("PUT manifest with subject: %s, want 201 and OCI-Subject: %s", r, im.Digest())
		}
		digests = append(digests, sha(b))
	}

	list := func(query string) (manifest, rawResp) {
		r := do(t, "GET", a.URL()+"/v2/"+repo+"/referrers/"+im.Digest()+query, nil, nil)
		var idx manifest
		if r.Status != http.StatusOK || json.Unmarshal(r.Body, &idx) != nil || idx.MediaType != mtOCIIndex ||
			!strings.HasPrefix(r.Header.Get("Content-Type"), mtOCIIndex) {
			t.Fatalf("GET referrers%s: %s", query, r)
		}
		return idx, r
	}
	idx, _ := list("")
	if len(idx.Manifests) != 3 {
		t.Errorf("referrers: %d manifests, want 3", len(idx.Manifests))
	}
	for _, d := range idx.Manifests {
		if !slices.Contains(digests, d.Digest) || d.ArtifactType == "" || d.Size == 0 {
			t.Errorf("unexpected referrer descriptor %+v", d)
		}
	}
	idx, r := list("?artifactType=" + atSig)
	if len(idx.Manifests) != 2 || r.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("filtered referrers: %d manifests, OCI-Filters-Applied=%q; want 2, artifactType",
			len(idx.Manifests), r.Header.Get("OCI-Filters-Applied"))
	}
	unknown := sha([]byte("nothing refers to this"))
	r = do(t, "GET", a.URL()+"/v2/"+repo+"/referrers/"+unknown, nil, nil)
	if err := json.Unmarshal(r.Body, &idx); r.Status != http.StatusOK || err != nil || len(idx.Manifests) != 0 {
		t.Errorf("referrers of an unknown digest: %s, want 200 and an empty index", r)
	}
}
