package e2e

import (
	"archive/tar"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
)

// TestImageScript: scripts/image.sh builds, without Docker, an OCI image
// index for linux/amd64 and linux/arm64 that is the same bytes twice;
// pushed into a real arca, crane sees both platforms, the config runs
// `arca serve` as 65532 with the data volume and the OCI labels, and the
// amd64 binary taken out of the image runs and prints the version.
func TestImageScript(t *testing.T) {
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const version = "v1.2.3-img"
	layoutDigest := func(dir string) string {
		var idx manifest
		b, err := os.ReadFile(filepath.Join(dir, "index.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) != 1 {
			t.Fatalf("layout index.json %s: %v", b, err)
		}
		return idx.Manifests[0].Digest
	}
	var layouts []string
	for range 2 {
		out := t.TempDir()
		cmd := exec.Command("bash", "scripts/image.sh", version, out)
		cmd.Dir = root
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("image.sh: %v\n%s", err, b)
		}
		layouts = append(layouts, filepath.Join(out, "arca-"+version+"-oci"))
	}
	digest := layoutDigest(layouts[0])
	if d2 := layoutDigest(layouts[1]); d2 != digest {
		t.Errorf("two image builds differ: %s and %s", digest, d2)
	}

	a := startArca(t)
	c := crane(t)
	ref := a.Ref("arca/arca:" + version)
	c.crane("push", layouts[0], ref)
	if got := c.crane("digest", ref); got != digest {
		t.Errorf("pushed index digest %s, want %s", got, digest)
	}
	var idx manifest
	if err := json.Unmarshal([]byte(c.crane("manifest", ref)), &idx); err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, m := range idx.Manifests {
		if m.Platform != nil {
			plats = append(plats, m.Platform.OS+"/"+m.Platform.Architecture)
		}
	}
	slices.Sort(plats)
	if idx.MediaType != mtOCIIndex || !slices.Equal(plats, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index %s with platforms %v, want an OCI index of linux/amd64 and linux/arm64", idx.MediaType, plats)
	}
	c.crane("validate", "--remote", ref) // every layer's digest and diff ID

	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, arch := range []string{"amd64", "arm64"} {
		var cfg struct {
			Architecture string
			Config       struct {
				User       string
				Entrypoint []string
				Volumes    map[string]any
				Labels     map[string]string
			}
		}
		raw := c.crane("config", "--platform", "linux/"+arch, ref)
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg.Architecture != arch || cfg.Config.User != "65532:65532" ||
			!slices.Equal(cfg.Config.Entrypoint[:2], []string{"/usr/local/bin/arca", "serve"}) ||
			!slices.Contains(cfg.Config.Entrypoint, "/var/lib/arca") || cfg.Config.Volumes["/var/lib/arca"] == nil {
			t.Errorf("linux/%s config: %s", arch, raw)
		}
		l := cfg.Config.Labels
		if l["org.opencontainers.image.version"] != version || l["org.opencontainers.image.revision"] != strings.TrimSpace(string(head)) ||
			!strings.HasPrefix(l["org.opencontainers.image.source"], "https://") {
			t.Errorf("linux/%s labels: %v", arch, l)
		}
	}

	// The amd64 file system: the binary runs, the data directory belongs
	// to the image's user.
	export := exec.Command(toolPath(t, "crane"), "--insecure", "export", "--platform", "linux/amd64", ref, "-")
	fsTar, err := export.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := export.Start(); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "arca")
	found := map[string]*tar.Header{}
	tr := tar.NewReader(fsTar)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		found[strings.TrimSuffix(strings.TrimPrefix(h.Name, "./"), "/")] = h
		if h.Name == "usr/local/bin/arca" {
			f, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(f, tr); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}
	if err := export.Wait(); err != nil {
		t.Fatalf("crane export: %v", err)
	}
	if h := found["var/lib/arca"]; h == nil || h.Uid != 65532 || h.Typeflag != tar.TypeDir {
		t.Errorf("/var/lib/arca in the image: %+v", h)
	}
	if h := found["etc/ssl/certs/ca-certificates.crt"]; h == nil || h.Size == 0 {
		t.Errorf("no CA bundle in the image")
	}
	v, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(v), "arca "+version+" ") {
		t.Errorf("arca --version from the image: %q %v", v, err)
	}
}
