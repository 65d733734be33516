package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// Shared helpers for the pull-through and mirror end-to-end tests and
// benchmarks: an arca allowed to reach test upstreams over plain HTTP, the
// real `arca` CLI to create rules and credential sets, seeding the real
// upstream with images whose every byte the test knows, and reading
// arca's metrics.

// ptAdminToken is the management token the pull-through tests start arca with.
const ptAdminToken = "e2e-pull-through-admin-token"

// mtAcceptAll asks for every manifest type, as pull clients do.
const mtAcceptAll = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// startCachingArca starts arca with a fresh data dir that may reach the
// given upstream hosts over plain HTTP. env is added to arca's environment
// (for env:// secret references); extra are more serve flags.
func startCachingArca(t testing.TB, upstreams []string, env []string, extra ...string) *arca {
	t.Helper()
	return startCachingArcaBin(t, arcaBin, upstreams, env, extra...)
}

// startCachingArcaBin is startCachingArca with another arca binary.
func startCachingArcaBin(t testing.TB, bin string, upstreams []string, env []string, extra ...string) *arca {
	t.Helper()
	var args []string
	for _, h := range upstreams {
		args = append(args, "--insecure-upstream", h)
	}
	return &arca{arcaproc.Start(t, arcaproc.Options{Bin: bin, Args: append(args, extra...),
		Env: append([]string{"ARCA_ADMIN_TOKEN=" + ptAdminToken}, env...)})}
}

// cli runs the real `arca` CLI against a and returns its stdout; a
// non-zero exit fails the test with the CLI's one-line reason.
func (a *arca) cli(t testing.TB, args ...string) string {
	t.Helper()
	out, err := a.tryCLI(args...)
	if err != nil {
		t.Fatalf("arca %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (a *arca) tryCLI(args ...string) (string, error) { return a.tryCLIAs(ptAdminToken, args...) }

// tryCLIAs runs the CLI with another management token.
func (a *arca) tryCLIAs(token string, args ...string) (string, error) {
	stdout, stderr, err := a.runCLI(token, args...)
	if err != nil {
		return stdout + stderr, err
	}
	return stdout, nil
}

// runCLI runs the CLI with a management token and returns its stdout and
// stderr apart.
func (a *arca) runCLI(token string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, arcaBin, args...)
	home, err := os.MkdirTemp("", "arca-cli-home-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(home)
	cmd.Env = append(os.Environ(), "HOME="+home, "ARCA_CONFIG_DIR="+home,
		"ARCA_ENDPOINT="+a.URL(), "ARCA_TOKEN="+token)
	cmd.Env = append(cmd.Env, a.BlobEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return stdout.String(), stderr.String(), err
}

// cacheRule creates a pull-through cache rule with `arca cache create`.
func (a *arca) cacheRule(t testing.TB, name, source, target string, extra ...string) {
	t.Helper()
	a.cli(t, append([]string{"cache", "create", "-r", "default", "-n", name, "-s", source, "-t", target, "-o", "none"}, extra...)...)
}

// seedImage pushes every blob and the manifest of im to the upstream.
func seedImage(t testing.TB, up *upstreamreg.Registry, repo, tag string, im *testImage) {
	t.Helper()
	for _, b := range im.blobs() {
		up.PushBlob(t, repo, b)
	}
	up.PushManifest(t, repo, tag, mtOCIManifest, im.Manifest)
}

// seedIndex pushes the images by digest and an OCI index of them under
// tag, and returns the index bytes.
func seedIndex(t testing.TB, up *upstreamreg.Registry, repo, tag string, ims ...*testImage) []byte {
	t.Helper()
	idx := manifest{SchemaVersion: 2, MediaType: mtOCIIndex}
	for _, im := range ims {
		seedImage(t, up, repo, im.Digest(), im)
		idx.Manifests = append(idx.Manifests, im.ManifestDesc)
	}
	b := mustJSON(t, idx)
	up.PushManifest(t, repo, tag, mtOCIIndex, b)
	return b
}

// getCached GETs a manifest or blob URL and returns the response, failing
// unless it is 200 with a body of digest want (when want is set).
func getCached(t testing.TB, u, want string) rawResp {
	t.Helper()
	r := do(t, "GET", u, map[string]string{"Accept": mtAcceptAll}, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: %s", u, r)
	}
	if want != "" && sha(r.Body) != want {
		t.Fatalf("GET %s: body digest %s (%d bytes), want %s", u, sha(r.Body), len(r.Body), want)
	}
	return r
}

// metric sums the samples of the Prometheus metric name whose labels
// include every `key="value"` in labels.
func (a *arca) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	r := do(t, "GET", a.URL()+"/metrics", nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /metrics: %s", r)
	}
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(r.Body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != '{' && l[len(name)] != ' ') {
			continue
		}
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(l, lb)
		}
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64); err == nil {
			sum += v
		}
	}
	return sum
}

// cacheResults counts arca_cache_requests_total by result.
func (a *arca) cacheResults(t testing.TB) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, res := range []string{"hit", "miss", "coalesced", "stale"} {
		out[res] = a.metric(t, "arca_cache_requests_total", `result="`+res+`"`)
	}
	return out
}

// upstreamGETs counts the upstream's logged GETs whose URI holds substr
// and whose answer was 200.
func upstreamGETs(up *upstreamreg.Registry, substr string) int {
	n := 0
	for _, e := range up.AccessLog() {
		if e.Method == http.MethodGet && e.Status == http.StatusOK && strings.Contains(e.URI, substr) {
			n++
		}
	}
	return n
}

// upstreamContentRequests counts logged manifest and blob requests (any
// method, any status): the traffic a warm pull must not cause.
func upstreamContentRequests(up *upstreamreg.Registry) int {
	return up.Requests("", "/manifests/") + up.Requests("", "/blobs/")
}

// checkDirHas verifies a `skopeo copy ... dir:` destination: each blob is a
// file named by its hex digest.
func checkDirHas(t testing.TB, dir string, im *testImage) {
	t.Helper()
	for _, b := range im.blobs() {
		hex := strings.TrimPrefix(sha(b), "sha256:")
		if got := fileDigest(t, filepath.Join(dir, hex)); got != sha(b) {
			t.Errorf("dir:%s: blob %s has digest %s", dir, hex, got)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, "manifest.json")); err != nil || sha(got) != im.Digest() {
		t.Errorf("dir:%s: manifest.json digest %s (%v), want %s", dir, sha(got), err, im.Digest())
	}
}

// fetchVerified GETs u and checks for a 200 whose body has digest want;
// safe to call from any goroutine (it reports errors, it does not fail).
func fetchVerified(u, want string) (http.Header, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", mtAcceptAll)
	resp, err := httpc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: body after %d bytes: %w", u, n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); resp.StatusCode != http.StatusOK || got != want {
		return nil, fmt.Errorf("GET %s: status %d, %d bytes with digest %s, want %s", u, resp.StatusCode, n, got, want)
	}
	return resp.Header, nil
}
