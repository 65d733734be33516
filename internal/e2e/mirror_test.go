package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Container runtimes pulling through arca, by arca's names and as a mirror
// that keeps the upstream's names: containerd (ctr, hosts.toml, whose
// requests carry ?ns=), podman (registries.conf mirrors), and Docker's
// registry-mirrors request shape (no namespace) over raw HTTP.

// containerdProc is a private containerd: root, state, socket and opt
// dirs in a temp dir, CRI plugin disabled.
type containerdProc struct {
	t    testing.TB
	sock string
	ctr  string
	cmd  *exec.Cmd
	done chan struct{}
	log  *syncBuffer
}

func startContainerd(t testing.TB) *containerdProc {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("containerd needs root (it owns its content store and mounts snapshots); run the e2e tests as root")
	}
	bin := toolPath(t, "containerd")
	// Short path: the socket path must fit in sun_path (108 bytes).
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "c.sock"),
		filepath.Join(dir, "c.sock.ttrpc"), filepath.Join(dir, "opt"))
	writeFile(t, filepath.Join(dir, "config.toml"), []byte(cfg))
	c := &containerdProc{t: t, sock: filepath.Join(dir, "c.sock"), ctr: toolPath(t, "ctr"), done: make(chan struct{}), log: &syncBuffer{}}
	c.cmd = exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	c.cmd.Stdout, c.cmd.Stderr = c.log, c.log
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	go func() { _ = c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.stop)
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := c.try("version"); err == nil {
			return c
		}
		select {
		case <-c.done:
			t.Fatalf("containerd exited during startup:\n%s", c.log.String())
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("containerd not answering on %s after 30s:\n%s", c.sock, c.log.String())
		}
	}
}

func (c *containerdProc) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

func (c *containerdProc) try(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctr, append([]string{"--address", c.sock, "--namespace", "e2e"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (c *containerdProc) run(args ...string) string {
	c.t.Helper()
	out, err := c.try(args...)
	if err != nil {
		c.t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// pull runs `ctr images pull` (unpacking into the native snapshotter) and
// checks that the image record points at want and that the content store
// holds every blob of ims.
func (c *containerdProc) pull(ref, want string, ims []*testImage, flags ...string) {
	c.t.Helper()
	c.run(append(append([]string{"images", "pull", "--snapshotter", "native"}, flags...), ref)...)
	var got string
	for _, l := range lines(c.run("images", "ls")) {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == ref {
			got = f[2]
		}
	}
	if got != want {
		c.t.Errorf("ctr images ls: %s -> %q, want %s", ref, got, want)
	}
	content := lines(c.run("content", "ls", "-q"))
	for _, im := range ims {
		for _, b := range append(im.blobs(), im.Manifest) {
			if !slices.Contains(content, sha(b)) {
				c.t.Errorf("ctr content store lacks %s of %s after pulling %s", sha(b), im.Digest(), ref)
			}
		}
	}
}

// writeHostsDir writes a containerd hosts directory for upstream host: arca
// as a pull/resolve mirror, and as server a port nobody listens on, so a
// pull only succeeds through the mirror.
func writeHostsDir(t testing.TB, host, arcaAddr string) string {
	t.Helper()
	dir := t.TempDir()
	toml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", freeAddr(t), arcaAddr)
	writeFile(t, filepath.Join(dir, host, "hosts.toml"), []byte(toml))
	return dir
}

func TestContainerdPullThrough(t *testing.T) {
	up, a, imgs := startPullThrough(t, 200)
	hosts := writeHostsDir(t, up.Host, a.Addr)
	pulls := func(c *containerdProc) {
		// By arca's name, over plain HTTP.
		c.pull(a.Ref("lib/app:v1"), imgs.app.Digest(), []*testImage{imgs.app}, "--plain-http")
		// By the upstream's name, through the hosts.toml mirror (?ns=).
		c.pull(up.Host+"/library/multi:latest", sha(imgs.index), []*testImage{imgs.amd, imgs.arm}, "--hosts-dir", hosts, "--all-platforms")
		c.pull(up.Host+"/other/special:v1", imgs.special.Digest(), []*testImage{imgs.special}, "--hosts-dir", hosts)
	}
	pulls(startContainerd(t))
	for _, b := range append(imgs.app.blobs(), imgs.arm.blobs()...) {
		if n := upstreamGETs(up, "/blobs/"+sha(b)); n != 1 {
			t.Errorf("upstream GETs of blob %s = %d, want 1", sha(b), n)
		}
	}
	// A second containerd starts with an empty content store.
	checkWarm(t, up, a, "containerd", func() { pulls(startContainerd(t)) })
}

// podmanTool runs podman with private storage, runtime dirs and
// configuration (registries.conf given by the test).
type podmanTool struct {
	*tool
	global []string
	policy string
}

func podman(t testing.TB, registriesConf string) *podmanTool {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("podman with --root/--runroot in a temp dir runs rootful here; run the e2e tests as root")
	}
	c := newTool(t, "podman")
	dir := t.TempDir()
	regs, storage, conf, policy := filepath.Join(dir, "registries.conf"), filepath.Join(dir, "storage.conf"),
		filepath.Join(dir, "containers.conf"), filepath.Join(dir, "policy.json")
	writeFile(t, regs, []byte(registriesConf))
	writeFile(t, storage, fmt.Appendf(nil, "[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "run")))
	writeFile(t, conf, nil)
	writeFile(t, policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))
	for _, d := range []string{"tmp", "xdg"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// newTool points DOCKER_CONFIG at the private HOME; podman insists
	// the file exists once the variable is set.
	for _, e := range c.env {
		if d, ok := strings.CutPrefix(e, "DOCKER_CONFIG="); ok {
			writeFile(t, filepath.Join(d, "config.json"), []byte(`{"auths":{}}`))
		}
	}
	c.env = append(c.env, "CONTAINERS_REGISTRIES_CONF="+regs, "CONTAINERS_STORAGE_CONF="+storage,
		"CONTAINERS_CONF="+conf, "TMPDIR="+filepath.Join(dir, "tmp"), "XDG_RUNTIME_DIR="+filepath.Join(dir, "xdg"))
	return &podmanTool{tool: c, policy: policy, global: []string{
		"--root", filepath.Join(dir, "root"), "--runroot", filepath.Join(dir, "run"),
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "file",
		"--tmpdir", filepath.Join(dir, "libpod"),
	}}
}

func (p *podmanTool) podman(args ...string) string {
	p.t.Helper()
	return p.run(append(p.global, args...)...)
}

// pull pulls ref and checks the stored image: its ID is the config digest
// of want and its digest is wantDigest (the index digest for an index).
func (p *podmanTool) pull(ref, wantDigest string, want *testImage, flags ...string) {
	p.t.Helper()
	p.podman(append(append([]string{"pull", "--quiet", "--signature-policy", p.policy}, flags...), ref)...)
	out := strings.TrimSpace(p.podman("image", "inspect", "--format", "{{.Id}} {{.Digest}}", ref))
	wantOut := strings.TrimPrefix(sha(want.Config), "sha256:") + " " + wantDigest
	if out != wantOut {
		p.t.Errorf("podman image inspect %s = %q, want %q (config ID, manifest digest)", ref, out, wantOut)
	}
}

func TestPodmanPullThrough(t *testing.T) {
	up, a, imgs := startPullThrough(t, 210)
	// Docker Hub names rewritten onto arca as in docs/mirror.md; the
	// primary location is a dead port, so only the mirror can answer.
	a.cacheRule(t, "hub-mirror", up.Host+"/*", "dockerhub/*")
	conf := fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
prefix = "docker.io"
location = %q

[[registry.mirror]]
location = "%s/dockerhub"
insecure = true
`, freeAddr(t), a.Addr)
	pulls := func(p *podmanTool) {
		p.pull(a.Ref("lib/app:v1"), imgs.app.Digest(), imgs.app, "--tls-verify=false")
		p.pull(a.Ref("lib/multi:latest"), sha(imgs.index), imgs.arm, "--tls-verify=false", "--arch", "arm64")
		p.pull("docker.io/other/special:v1", imgs.special.Digest(), imgs.special)
		p.pull("docker.io/library/multi:latest", sha(imgs.index), imgs.amd, "--arch", "amd64")
	}
	pulls(podman(t, conf))
	for _, b := range append(imgs.app.blobs(), imgs.special.blobs()...) {
		if n := upstreamGETs(up, "/blobs/"+sha(b)); n != 1 {
			t.Errorf("upstream GETs of blob %s = %d, want 1", sha(b), n)
		}
	}
	var catalog struct{ Repositories []string }
	if err := json.Unmarshal(getCached(t, a.URL()+"/v2/_catalog", "").Body, &catalog); err != nil ||
		!slices.Contains(catalog.Repositories, "dockerhub/other/special") {
		t.Errorf("catalog %v (%v): want dockerhub/other/special filled through the mirror", catalog.Repositories, err)
	}
	// A second podman with empty storage.
	checkWarm(t, up, a, "podman", func() { pulls(podman(t, conf)) })
}

// TestMirrorRequests drives the two mirror request shapes with raw HTTP:
// containerd's ?ns=<upstream host> and Docker's registry-mirrors (no ns).
func TestMirrorRequests(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 220, "amd64", 1<<20, 10<<10)
	seedImage(t, up, "library/app", "v1", im)
	a := startCachingArca(t, []string{up.Host}, []string{"ARCA_E2E_HUB_USER=u", "ARCA_E2E_HUB_PASS=p"})
	a.cacheRule(t, "library-wild", up.Host+"/library/*", "lib/*")

	// ?ns= names the upstream; the path is the upstream's.
	ns := "?ns=" + up.Host
	r := getCached(t, a.URL()+"/v2/library/app/manifests/v1"+ns, im.Digest())
	if h := r.Header.Get("X-Arca-Cache"); h != "miss" {
		t.Errorf("first ?ns= manifest GET: X-Arca-Cache %q, want miss", h)
	}
	for _, b := range im.blobs() {
		getCached(t, a.URL()+"/v2/library/app/blobs/"+sha(b)+ns, sha(b))
	}
	// It filled our repository lib/app.
	r = getCached(t, a.URL()+"/v2/lib/app/manifests/v1", im.Digest())
	if h := r.Header.Get("X-Arca-Cache"); h != "hit" {
		t.Errorf("lib/app after the ?ns= pull: X-Arca-Cache %q, want hit", h)
	}
	// A namespace no rule covers is answered from local repositories.
	r = do(t, "GET", a.URL()+"/v2/library/app/manifests/v1?ns=ghcr.io", map[string]string{"Accept": mtAcceptAll}, nil)
	if r.Status != http.StatusNotFound || !r.hasCode("MANIFEST_UNKNOWN") {
		t.Errorf("?ns=ghcr.io without a rule: %s, want 404 MANIFEST_UNKNOWN", r)
	}

	// Docker's registry-mirrors: no ns, a Docker Hub path matching no rule
	// target and no repository is read as docker.io/<path>.
	a.cli(t, "credential-set", "create", "-r", "default", "-n", "hubcreds", "-l", "docker.io",
		"-u", "env://ARCA_E2E_HUB_USER", "-p", "env://ARCA_E2E_HUB_PASS", "-o", "none")
	a.cacheRule(t, "hub-library", "docker.io/library/*", "hub/*", "-c", "hubcreds")
	// Docker Hub is not reachable from here (a 200 is fine too, with
	// internet). With ns=docker.io the failure is rule hub-library's 424;
	// without, the mapping is a guess, and arca answers for its own name
	// once it tried the rule (the access log says so): 404, on which the
	// client falls back to its primary.
	for _, path := range []string{"library/nginx/manifests/latest?ns=docker.io", "library/nginx/manifests/latest", "nginx/manifests/latest"} {
		r = do(t, "GET", a.URL()+"/v2/"+path, map[string]string{"Accept": mtAcceptAll}, nil)
		explicit := strings.Contains(path, "ns=")
		switch {
		case r.Status == http.StatusOK:
		case explicit && !strings.Contains(string(r.Body), "hub-library"):
			t.Errorf("mirror request for Docker Hub GET /v2/%s: %s; want an answer from rule hub-library", path, r)
		case !explicit && r.Status != http.StatusNotFound:
			t.Errorf("registry-mirrors request GET /v2/%s with Docker Hub unreachable: %s; want 404", path, r)
		}
	}
	for _, p := range []string{"/v2/library/nginx/manifests/latest", "/v2/nginx/manifests/latest"} {
		if !waitAccessLogged(a.Logs, p, "rule=hub-library") {
			t.Errorf("arca's access log has no line for %s through rule hub-library", p)
		}
	}

	// The same path shape against our upstream, with --mirror-namespace
	// naming it: the registry-mirrors path works end to end.
	b := startCachingArca(t, []string{up.Host}, nil, "--mirror-namespace", up.Host)
	b.cacheRule(t, "library-wild", up.Host+"/library/*", "lib/*")
	getCached(t, b.URL()+"/v2/library/app/manifests/v1", im.Digest())
	for _, bl := range im.blobs() {
		getCached(t, b.URL()+"/v2/library/app/blobs/"+sha(bl), sha(bl))
	}
	getCached(t, b.URL()+"/v2/lib/app/manifests/v1", im.Digest())
}

// accessLogged reports whether logs have an access log line for path
// (text format) holding every one of want.
// waitAccessLogged polls the log: the access-log line is written after the
// response, so a client can see the answer before the line exists.
func waitAccessLogged(logs func() string, path string, want ...string) bool {
	deadline := time.Now().Add(30 * time.Second) // only a missing line waits this long
	for {
		if accessLogged(logs(), path, want...) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func accessLogged(logs, path string, want ...string) bool {
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, "msg=request") || !strings.Contains(l, "path="+path+" ") {
			continue
		}
		ok := true
		for _, w := range want {
			ok = ok && strings.Contains(l, w)
		}
		if ok {
			return true
		}
	}
	return false
}
