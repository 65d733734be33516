package e2e

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// regctl runs regctl with a private config that marks a plain-http host.
// The small blob-max/blob-chunk make regctl push larger blobs as chunked
// uploads (POST, PATCH with Content-Range..., PUT).
func regctl(t testing.TB, a *arca) *tool {
	c := newTool(t, "regctl")
	c.dir = t.TempDir()
	c.run("registry", "set", "--tls", "disabled", "--blob-max", "1048576", "--blob-chunk", "524288", a.Addr)
	return c
}

func TestRegctl(t *testing.T) {
	a := startArca(t)
	c := regctl(t, a)
	im := newImage(t, 80, "amd64", 3<<20+123, 40<<10)
	ref := a.Ref("rc/img:v1")

	// Into arca from an OCI layout: the 3 MiB layer goes up in chunks.
	c.run("image", "copy", "ocidir://"+im.writeLayout(t)+":latest", ref)
	if got := c.run("manifest", "get", "--format", "raw-body", ref); got != string(im.Manifest) {
		t.Errorf("manifest get raw-body differs from pushed:\n got %s\nwant %s", got, im.Manifest)
	}
	if got := strings.TrimSpace(c.run("image", "digest", ref)); got != im.Digest() {
		t.Errorf("image digest = %s, want %s", got, im.Digest())
	}
	for _, b := range im.blobs() {
		if got := c.run("blob", "get", a.Ref("rc/img"), sha(b)); sha([]byte(got)) != sha(b) {
			t.Errorf("blob get %s: got %d bytes with digest %s", sha(b), len(got), sha([]byte(got)))
		}
		a.checkBlob(t, "rc/img", b)
	}

	// Registry-internal copy (regctl mounts blobs across repositories).
	c.run("image", "copy", ref, a.Ref("rc/copy:v2"))
	c.run("image", "copy", ref, a.Ref("rc/copy:v3"))
	if got := strings.TrimSpace(c.run("image", "digest", a.Ref("rc/copy:v2"))); got != im.Digest() {
		t.Errorf("copied digest = %s, want %s", got, im.Digest())
	}
	for _, b := range im.blobs() {
		a.checkBlob(t, "rc/copy", b)
	}
	if tags := lines(c.run("tag", "ls", a.Ref("rc/copy"))); !slices.Equal(tags, []string{"v2", "v3"}) {
		t.Errorf("tag ls = %v, want [v2 v3]", tags)
	}

	// Back out to an OCI layout, byte for byte.
	back := filepath.Join(t.TempDir(), "back")
	c.run("image", "copy", a.Ref("rc/copy:v3"), "ocidir://"+back+":latest")
	checkLayoutHas(t, back, im)

	// Referrers: an SBOM attached to the image, listed and fetched back.
	sbom := []byte(`{"spdxVersion":"SPDX-2.3","name":"rc/img"}`)
	c.writeFile("sbom.json", sbom)
	c.run("artifact", "put", "--subject", ref, "--artifact-type", atSBOM,
		"-f", "sbom.json", "-m", "application/spdx+json", a.Ref("rc/img"))
	var list struct {
		Descriptors []descriptor `json:"descriptors"`
	}
	raw := c.run("artifact", "list", "--format", "{{json .}}", ref)
	if err := json.Unmarshal([]byte(raw), &list); err != nil {
		t.Fatalf("artifact list output %q: %v", raw, err)
	}
	if len(list.Descriptors) != 1 || list.Descriptors[0].ArtifactType != atSBOM {
		t.Fatalf("artifact list = %s, want one %s referrer", raw, atSBOM)
	}
	got := c.run("artifact", "get", "--subject", ref, "--filter-artifact-type", atSBOM)
	if got != string(sbom) {
		t.Errorf("artifact get = %q, want %q", got, sbom)
	}
}
