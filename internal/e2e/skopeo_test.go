package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"

// skopeo runs skopeo with a private, permissive policy and an empty
// registries.conf (skopeo ignores CONTAINERS_REGISTRIES_CONF).
type skopeoTool struct {
	*tool
	global []string
}

func skopeo(t testing.TB) *skopeoTool {
	c := newTool(t, "skopeo")
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	regs := filepath.Join(dir, "registries.conf")
	writeFile(t, policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	writeFile(t, regs, nil)
	return &skopeoTool{tool: c, global: []string{"--policy", policy, "--registries-conf", regs, "--tmpdir", dir}}
}

func (s *skopeoTool) skopeo(args ...string) string {
	s.t.Helper()
	return s.run(append(s.global, args...)...)
}

func (s *skopeoTool) copy(args ...string) {
	s.t.Helper()
	s.skopeo(append([]string{"copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"}, args...)...)
}

func TestSkopeoCopyInspect(t *testing.T) {
	a := startArca(t)
	s := skopeo(t)
	im := newImage(t, 70, "amd64", 16<<10, 3<<20)
	dst := "docker://" + a.Ref("sk/oci:v1")
	s.copy("--preserve-digests", "oci:"+im.writeLayout(t)+":latest", dst)

	var info struct {
		Digest       string
		Architecture string
		Layers       []string
	}
	raw := s.skopeo("inspect", "--tls-verify=false", dst)
	if err := json.Unmarshal([]byte(raw), &info); err != nil {
		t.Fatalf("skopeo inspect: %q: %v", raw, err)
	}
	if info.Digest != im.Digest() || info.Architecture != "amd64" || len(info.Layers) != 2 ||
		info.Layers[1] != sha(im.Layers[1]) {
		t.Errorf("skopeo inspect = %+v, want digest %s", info, im.Digest())
	}
	if got := s.skopeo("inspect", "--tls-verify=false", "--raw", dst); got != string(im.Manifest) {
		t.Errorf("skopeo inspect --raw returned other bytes than pushed")
	}
	if got := s.skopeo("inspect", "--tls-verify=false", "--config", "--raw", dst); got != string(im.Config) {
		t.Errorf("skopeo inspect --config --raw returned other bytes than pushed")
	}

	back := filepath.Join(t.TempDir(), "back")
	s.copy("--preserve-digests", dst, "oci:"+back+":latest")
	checkLayoutHas(t, back, im)
}

// TestSkopeoDockerSchema2 converts to Docker schema 2 on the way in, and
// round-trips through a docker-archive tarball.
func TestSkopeoDockerSchema2(t *testing.T) {
	a := startArca(t)
	s := skopeo(t)
	im := newImage(t, 71, "amd64", 1<<20, 20<<10)
	dst := "docker://" + a.Ref("sk/docker:v1")
	s.copy("--format", "v2s2", "oci:"+im.writeLayout(t)+":latest", dst)

	pushed := []byte(s.skopeo("inspect", "--tls-verify=false", "--raw", dst))
	r := do(t, "GET", a.URL()+"/v2/sk/docker/manifests/v1", map[string]string{"Accept": mtDockerManifest}, nil)
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != mtDockerManifest ||
		!bytes.Equal(r.Body, pushed) || r.Header.Get("Docker-Content-Digest") != sha(pushed) {
		t.Fatalf("GET schema2 manifest: %s", r)
	}
	var m manifest
	if err := json.Unmarshal(pushed, &m); err != nil || m.MediaType != mtDockerManifest || len(m.Layers) != 2 {
		t.Fatalf("schema2 manifest %s (%v)", pushed, err)
	}
	// Same compressed layers, so same blob digests.
	for i, l := range m.Layers {
		if l.Digest != sha(im.Layers[i]) {
			t.Errorf("layer %d digest %s, want %s", i, l.Digest, sha(im.Layers[i]))
		}
	}

	dir := filepath.Join(t.TempDir(), "dir")
	s.copy(dst, "dir:"+dir)
	for _, b := range im.blobs() {
		hex := strings.TrimPrefix(sha(b), "sha256:")
		if got := fileDigest(t, filepath.Join(dir, hex)); got != sha(b) {
			t.Errorf("dir: blob %s has digest %s", hex, got)
		}
	}

	archive := filepath.Join(t.TempDir(), "img.tar")
	s.copy(dst, "docker-archive:"+archive+":sk/docker:v1")
	dst2 := "docker://" + a.Ref("sk/from-archive:v1")
	s.copy("docker-archive:"+archive, dst2)
	// The archive holds uncompressed layers, recompressed on push, so
	// layer digests change; the config (with the diff_ids) must not.
	if got := s.skopeo("inspect", "--tls-verify=false", "--config", "--raw", dst2); got != string(im.Config) {
		t.Errorf("config after docker-archive round trip differs:\n got %s\nwant %s", got, im.Config)
	}
	if fi, err := os.Stat(archive); err != nil || fi.Size() < 1<<20 {
		t.Errorf("docker-archive too small: %v %v", fi, err)
	}
}
