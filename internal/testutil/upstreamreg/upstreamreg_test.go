package upstreamreg

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/freeport"
)

const accept = oci.MediaTypeOCIIndex + ", " + oci.MediaTypeOCIManifest

func get(t *testing.T, u, authz string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", u, err)
	}
	return resp, body
}

func TestNoAuthPushPullAndAccessLog(t *testing.T) {
	r := Start(t, Options{})
	layer := bytes.Repeat([]byte("layer"), 1000)
	d := r.Push(t, "team/app", "v1", layer)

	resp, body := get(t, r.URL()+"/v2/team/app/manifests/v1", "")
	if resp.StatusCode != 200 || digest.FromBytes(body) != d {
		t.Fatalf("GET manifest: %d, digest %s, want 200 %s", resp.StatusCode, digest.FromBytes(body), d)
	}
	resp, body = get(t, r.URL()+"/v2/team/app/blobs/"+digest.FromBytes(layer).String(), "")
	if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("GET blob: %d, %d bytes", resp.StatusCode, len(body))
	}
	if n := r.Requests("GET", "/v2/team/app/manifests/v1"); n != 1 {
		t.Errorf("access log: %d GETs of the manifest, want 1", n)
	}
	if n := r.Requests("PUT", "/manifests/v1"); n != 1 {
		t.Errorf("access log: %d PUTs of the manifest, want 1", n)
	}

	r.Restart(t)
	if resp, _ := get(t, r.URL()+"/v2/team/app/manifests/"+d.String(), ""); resp.StatusCode != 200 {
		t.Fatalf("after restart GET manifest: %d, want 200 (same storage)", resp.StatusCode)
	}
}

func TestHtpasswd(t *testing.T) {
	r := Start(t, Options{Auth: Htpasswd})
	r.Push(t, "app", "v1", []byte("x"))
	resp, _ := get(t, r.URL()+"/v2/app/manifests/v1", "")
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("Www-Authenticate"), "Basic ") {
		t.Fatalf("anonymous: %d %q, want 401 Basic challenge", resp.StatusCode, resp.Header.Get("Www-Authenticate"))
	}
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/app/manifests/v1", nil)
	req.Header.Set("Accept", accept)
	req.SetBasicAuth(r.Username, "wrong")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 401 {
		t.Fatalf("wrong password: %v %v, want 401", resp.StatusCode, err)
	}
	req.SetBasicAuth(r.Username, r.Password)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("right password: %v %v, want 200", resp.StatusCode, err)
	}
}

// fetchToken follows the challenge by hand, as a Docker client does.
func fetchToken(t *testing.T, challenge, user, pass string) (int, string) {
	t.Helper()
	params := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(challenge, "Bearer "), ",") {
		k, v, _ := strings.Cut(kv, "=")
		params[k] = strings.Trim(v, `"`)
	}
	q := url.Values{"service": {params["service"]}, "scope": {params["scope"]}}
	req, _ := http.NewRequest(http.MethodGet, params["realm"]+"?"+q.Encode(), nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		IssuedAt    string `json:"issued_at"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode == 200 && (body.Token == "" || body.Token != body.AccessToken || body.ExpiresIn != 300 || body.IssuedAt == "") {
		t.Fatalf("token response %+v lacks Docker Hub's fields", body)
	}
	return resp.StatusCode, body.Token
}

func TestTokenAuthAgainstRealRegistry(t *testing.T) {
	r := Start(t, Options{Auth: Token, Username: "alice", Password: "pw"})
	r.Push(t, "private/app", "v1", []byte("secret layer"))
	u := r.URL() + "/v2/private/app/manifests/v1"

	resp, _ := get(t, u, "")
	ch := resp.Header.Get("Www-Authenticate")
	if resp.StatusCode != 401 || !strings.Contains(ch, `realm="`+r.TokenRealm()+`"`) || !strings.Contains(ch, `scope="repository:private/app:pull"`) {
		t.Fatalf("challenge: %d %q", resp.StatusCode, ch)
	}
	if code, _ := fetchToken(t, ch, "alice", "wrong"); code != 401 {
		t.Fatalf("token with wrong password: %d, want 401", code)
	}
	_, anon := fetchToken(t, ch, "", "")
	if resp, _ := get(t, u, "Bearer "+anon); resp.StatusCode != 401 {
		t.Fatalf("anonymous token (no access): registry answered %d, want 401", resp.StatusCode)
	}
	_, tok := fetchToken(t, ch, "alice", "pw")
	if resp, _ := get(t, u, "Bearer "+tok); resp.StatusCode != 200 {
		t.Fatalf("registry rejected the fixture's signed token: %d\n%s", resp.StatusCode, r.Stderr())
	}
	if n := r.TokenRequests(); n != 3 {
		t.Errorf("TokenRequests = %d, want 3", n)
	}

	r.RotateTokenKey(t)
	if resp, _ := get(t, u, "Bearer "+tok); resp.StatusCode != 401 {
		t.Fatalf("token signed by the old key after rotation: %d, want 401", resp.StatusCode)
	}
}

func TestPushIndexAndReferrerFallbackTag(t *testing.T) {
	r := Start(t, Options{})
	amd := r.PushImage(t, "multi", "", &oci.Platform{OS: "linux", Architecture: "amd64"}, []byte("amd"))
	arm := r.PushImage(t, "multi", "", &oci.Platform{OS: "linux", Architecture: "arm64"}, []byte("arm"))
	idx := r.PushIndex(t, "multi", "latest", amd, arm)
	sig := r.PushReferrer(t, "multi", idx, "application/vnd.dev.cosign.artifact.sig.v1+json", nil)
	sbom := r.PushReferrer(t, "multi", idx, "application/spdx+json", map[string]string{"k": "v"})

	resp, body := get(t, r.URL()+"/v2/multi/manifests/"+oci.ReferrersTag(idx.Digest), "")
	if resp.StatusCode != 200 {
		t.Fatalf("fallback tag: %d", resp.StatusCode)
	}
	var got oci.Index
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Manifests) != 2 || got.Manifests[0].Digest != sig.Digest || got.Manifests[1].Digest != sbom.Digest ||
		got.Manifests[1].ArtifactType != "application/spdx+json" || got.Manifests[1].Annotations["k"] != "v" {
		t.Fatalf("fallback index = %s", body)
	}
	// The referrer itself is stored with its subject (2.8 keeps the bytes).
	resp, body = get(t, r.URL()+"/v2/multi/manifests/"+sig.Digest.String(), "")
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(idx.Digest)) {
		t.Fatalf("referrer manifest: %d %s", resp.StatusCode, body)
	}
}

func TestFaultProxy(t *testing.T) {
	r := Start(t, Options{Auth: Htpasswd})
	layer := bytes.Repeat([]byte{7}, 100_000)
	r.Push(t, "app", "v1", layer)
	p := NewFaultProxy(t, r)
	blobURL := "http://" + p.Host() + "/v2/app/blobs/" + digest.FromBytes(layer).String()
	basic := "Basic " + basicToken(r.Username, r.Password)

	p.TooManyRequests(1, "7")
	resp, body := get(t, blobURL, basic)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "7" || !bytes.Contains(body, []byte("TOOMANYREQUESTS")) {
		t.Fatalf("429 fault: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	p.Unavailable(1)
	if resp, _ := get(t, blobURL, basic); resp.StatusCode != 503 {
		t.Fatalf("503 fault: %d", resp.StatusCode)
	}
	p.CorruptBlobs(1)
	if resp, body := get(t, blobURL, basic); resp.StatusCode != 200 || len(body) != len(layer) || bytes.Equal(body, layer) {
		t.Fatalf("corrupt: %d, %d bytes, equal=%v", resp.StatusCode, len(body), bytes.Equal(body, layer))
	}
	p.CutBlobsAfter(1000, 1)
	if _, err := readAll(blobURL, basic); err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Fatalf("cut: err = %v, want unexpected EOF", err)
	}
	if resp, body := get(t, blobURL, basic); resp.StatusCode != 200 || !bytes.Equal(body, layer) {
		t.Fatalf("after faults: %d, equal=%v", resp.StatusCode, bytes.Equal(body, layer))
	}

	p.RedirectBlobs(true)
	req, _ := http.NewRequest(http.MethodGet, blobURL, nil)
	req.Header.Set("Authorization", basic)
	resp, err := http.DefaultClient.Do(req) // Go keeps Authorization across a port change
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || len(p.StorageRequests()) != 1 || p.StorageRequests()[0].Authorization == "" {
		t.Fatalf("storage with Authorization: %d %+v, want 400", resp.StatusCode, p.StorageRequests())
	}
	if resp, _ := get(t, blobURL, ""); resp.StatusCode != 401 {
		t.Fatalf("redirect mode, anonymous: %d, want the registry's 401", resp.StatusCode)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req.Header.Set("Authorization", basic)
	resp, err = noFollow.Do(req)
	if err != nil || resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("redirect: %v %v", resp, err)
	}
	resp.Body.Close()
	if body, err := readAll(resp.Header.Get("Location"), ""); err != nil || !bytes.Equal(body, layer) {
		t.Fatalf("storage without Authorization: %v, equal=%v", err, bytes.Equal(body, layer))
	}

	p.Down()
	if _, err := http.Get(blobURL); err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("down: err = %v, want connection refused", err)
	}
	p.Up(t)
	p.RedirectBlobs(false)
	if resp, _ := get(t, blobURL, basic); resp.StatusCode != 200 {
		t.Fatalf("up again: %d", resp.StatusCode)
	}
	if n := p.Requests("GET", "/blobs/"); n != 9 {
		t.Errorf("proxy counted %d blob GETs, want 9: %+v", n, p.Log())
	}
}

func readAll(u, authz string) ([]byte, error) {
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

func basicToken(u, p string) string {
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	req.SetBasicAuth(u, p)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// TestTakenPort: a registry whose port another process took first, here
// another docker-registry that answers /v2/ just as well, is not taken
// for started; its start fails with freeport.ErrInUse, which makes Start
// try a fresh port.
func TestTakenPort(t *testing.T) {
	other := Start(t, Options{})
	r := &Registry{opts: Options{}, binary: findBinary(t, ""), dir: t.TempDir(),
		client: &http.Client{Timeout: 60 * time.Second}, log: &accessLog{}, stderr: &ringBuffer{max: 200}}
	t.Cleanup(r.Stop)
	if err := r.startOnce(other.Host); !errors.Is(err, freeport.ErrInUse) {
		t.Fatalf("start on %s, which another registry serves: %v, want ErrInUse", other.Host, err)
	}
	if resp, _ := get(t, other.URL()+"/v2/", ""); resp.StatusCode != http.StatusOK {
		t.Fatalf("the other registry: %s", resp.Status)
	}
}
