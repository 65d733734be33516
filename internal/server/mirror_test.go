package server

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// raw sends one /v2/ request and returns status, headers and body.
func (ts *testServer) raw(method, path, contentType string, body []byte) (int, http.Header, []byte) {
	ts.t.Helper()
	req, err := http.NewRequest(method, ts.url+path, bytes.NewReader(body))
	if err != nil {
		ts.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", oci.MediaTypeOCIManifest+", "+oci.MediaTypeOCIIndex)
	res, err := ts.client.Do(req)
	if err != nil {
		ts.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

func (ts *testServer) rule(name, source, target string) {
	ts.t.Helper()
	if st, m := ts.do("PUT", armBase+"default/cacheRules/"+name+"?api-version=2023-07-01", "", map[string]any{"properties": map[string]any{
		"sourceRepository": source, "targetRepository": target}}); st != http.StatusCreated {
		ts.t.Fatalf("create rule %s: %d %v", name, st, m)
	}
}

// With the default mirror namespace (docker.io) and the README's rule
// docker.io/library/* => dockerhub/*, a push to a new single-segment
// repository is ours: mirror mapping applies to pulls only. Deletes are
// about our names too.
func TestPushNotMirrorMapped(t *testing.T) {
	ts, _ := startServer(t, t.TempDir(), &lockedBuffer{}, ManagementOptions{AdminToken: testAdminToken},
		PullThroughOptions{MirrorNamespace: "docker.io", Revalidate: time.Minute})
	ts.token = testAdminToken
	t.Setenv("ARCA_TEST_HUB_USER", "u")
	if st, m := ts.do("PUT", armBase+"default/credentialSets/hubcreds?api-version=2023-07-01", "", map[string]any{"properties": map[string]any{
		"loginServer": "docker.io", "authCredentials": []any{map[string]any{"name": "Credential1",
			"usernameSecretIdentifier": "env://ARCA_TEST_HUB_USER", "passwordSecretIdentifier": "env://ARCA_TEST_HUB_USER"}}}}); st != http.StatusCreated {
		t.Fatalf("create credential set: %d %v", st, m)
	}
	if st, m := ts.do("PUT", armBase+"default/cacheRules/dockerhub-rule?api-version=2023-07-01", "", map[string]any{"properties": map[string]any{
		"sourceRepository": "docker.io/library/*", "targetRepository": "dockerhub/*",
		"credentialSetResourceId": armBase + "default/credentialSets/hubcreds"}}); st != http.StatusCreated {
		t.Fatalf("create rule: %d %v", st, m)
	}

	cfg, layer := []byte(`{"architecture":"amd64","os":"linux"}`), []byte("a layer of myapp")
	for _, b := range [][]byte{cfg, layer} {
		d := digest.FromBytes(b)
		// The pusher's existence check: ours, not a mirror read of Docker Hub.
		if st, _, body := ts.raw("HEAD", "/v2/myapp/blobs/"+d.String(), "", nil); st != http.StatusNotFound {
			t.Fatalf("HEAD blob before the push: %d %s, want 404", st, body)
		}
		st, _, body := ts.raw("POST", "/v2/myapp/blobs/uploads/", "", nil)
		if st != http.StatusAccepted {
			t.Fatalf("POST /v2/myapp/blobs/uploads/: %d %s", st, body)
		}
		st, _, body = ts.raw("POST", "/v2/myapp/blobs/uploads/?digest="+d.String(), "application/octet-stream", b)
		if st != http.StatusCreated {
			t.Fatalf("monolithic upload: %d %s", st, body)
		}
	}
	m := []byte(`{"schemaVersion":2,"mediaType":"` + oci.MediaTypeOCIManifest + `","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` +
		digest.FromBytes(cfg).String() + `","size":` + itoa(len(cfg)) + `},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"` +
		digest.FromBytes(layer).String() + `","size":` + itoa(len(layer)) + `}]}`)
	if st, _, body := ts.raw("PUT", "/v2/myapp/manifests/v1", oci.MediaTypeOCIManifest, m); st != http.StatusCreated {
		t.Fatalf("PUT manifest: %d %s", st, body)
	}
	st, hd, body := ts.raw("GET", "/v2/myapp/manifests/v1", "", nil)
	if st != 200 || !bytes.Equal(body, m) || hd.Get("X-Arca-Cache") != "" {
		t.Fatalf("GET pushed manifest: %d %v %s", st, hd, body)
	}
	if st, _, body := ts.raw("DELETE", "/v2/myapp/manifests/v1", "", nil); st != http.StatusAccepted {
		t.Fatalf("DELETE tag: %d %s", st, body)
	}
	// A push into the rule's target is still refused.
	if st, _, body := ts.raw("POST", "/v2/dockerhub/nginx/blobs/uploads/", "", nil); st != http.StatusForbidden || !strings.Contains(string(body), "DENIED") {
		t.Fatalf("push into a rule target: %d %s, want 403 DENIED", st, body)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

// A mirror request whose ns names a registry no rule's source is on is
// served as if ns were absent: a cold rule-backed repository by its target
// name, referrers included. An ns a rule's source is on keeps its meaning.
func TestMirrorNamespaceOfNoRule(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	desc := up.PushImage(t, "library/app", "v1", &oci.Platform{OS: "linux", Architecture: "amd64"}, []byte("app layer"))
	sbom := up.PushReferrer(t, "library/app", desc, "application/spdx+json", nil)
	ts, _ := startServer(t, t.TempDir(), &lockedBuffer{}, ManagementOptions{AdminToken: testAdminToken},
		PullThroughOptions{InsecureUpstreams: []string{up.Host}, Revalidate: time.Minute})
	ts.token = testAdminToken
	ts.rule("library-wild", up.Host+"/library/*", "lib/*")

	const ns = "?ns=arca.example.com:5000" // regctl: the host it was configured for
	st, hd, body := ts.raw("GET", "/v2/lib/app/manifests/v1"+ns, "", nil)
	if st != 200 || hd.Get("Docker-Content-Digest") != desc.Digest.String() || hd.Get("X-Arca-Cache") != "miss" {
		t.Fatalf("cold GET with an ns of no rule: %d %v %s", st, hd, body)
	}
	st, hd, body = ts.raw("GET", "/v2/lib/app/referrers/"+desc.Digest.String()+ns, "", nil)
	var idx oci.Index
	if st != 200 || json.Unmarshal(body, &idx) != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sbom.Digest {
		t.Fatalf("referrers with an ns of no rule: %d %s, want the upstream's referrer %s", st, body, sbom.Digest)
	}
	if hd.Get("X-Arca-Cache") == "" {
		t.Errorf("referrers of a rule-backed repository without X-Arca-Cache: %v", hd)
	}
	// The upstream's own host: its paths, mapped back through the rules;
	// a path of that host no rule covers is not found.
	if st, _, body = ts.raw("GET", "/v2/library/app/manifests/v1?ns="+up.Host, "", nil); st != 200 {
		t.Fatalf("GET ?ns=<rule source host>: %d %s", st, body)
	}
	if st, _, body = ts.raw("GET", "/v2/other/app/manifests/v1?ns="+up.Host, "", nil); st != http.StatusNotFound {
		t.Fatalf("GET ?ns=<rule source host> of a path no rule maps: %d %s, want 404", st, body)
	}
}
