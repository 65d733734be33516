package upstreamreg

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
)

// Authorize adds the account's credentials to req, for seeding and checks
// that go around the client under test. With Token it mints a token with
// pull, push and delete on repo directly, so it does not count as a token
// request.
func (r *Registry) Authorize(req *http.Request, repo string) error {
	switch r.opts.Auth {
	case Htpasswd:
		req.SetBasicAuth(r.Username, r.Password)
	case Token:
		access := []resourceActions{{Type: "repository", Name: repo, Actions: []string{"pull", "push", "delete"}}}
		if repo == "" {
			access = []resourceActions{{Type: "registry", Name: "catalog", Actions: []string{"*"}}}
		}
		tok, err := r.token.mint("fixture-admin", access, time.Now())
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	return nil
}

// send makes an authorized request to the registry for repo and fails the
// test unless the status is want.
func (r *Registry) send(t testing.TB, method, target, repo string, body []byte, header http.Header, want int) *http.Response {
	t.Helper()
	u, err := url.Parse(r.URL())
	if err != nil {
		t.Fatalf("upstreamreg: %v", err)
	}
	ref, err := url.Parse(target)
	if err != nil {
		t.Fatalf("upstreamreg: bad target %q: %v", target, err)
	}
	req, err := http.NewRequest(method, u.ResolveReference(ref).String(), bytes.NewReader(body))
	if err != nil {
		t.Fatalf("upstreamreg: %v", err)
	}
	req.ContentLength = int64(len(body))
	for k, v := range header {
		req.Header[k] = v
	}
	if err := r.Authorize(req, repo); err != nil {
		t.Fatalf("upstreamreg: authorize: %v", err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("upstreamreg: %s %s: %v", method, target, err)
	}
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		t.Fatalf("upstreamreg: %s %s: status %d (want %d): %s", method, target, resp.StatusCode, want, msg)
	}
	return resp
}

// PushBlob uploads data (monolithic upload) and returns its digest.
func (r *Registry) PushBlob(t testing.TB, repo string, data []byte) digest.Digest {
	t.Helper()
	d := digest.FromBytes(data)
	resp := r.send(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/", repo, nil, nil, http.StatusAccepted)
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("upstreamreg: upload Location: %v", err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	hdr := http.Header{"Content-Type": {"application/octet-stream"}}
	r.send(t, http.MethodPut, loc.String(), repo, data, hdr, http.StatusCreated).Body.Close()
	return d
}

// PushManifest uploads a manifest under ref (a tag, or "" to push by
// digest) and returns its descriptor.
func (r *Registry) PushManifest(t testing.TB, repo, ref, mediaType string, body []byte) oci.Descriptor {
	t.Helper()
	d := digest.FromBytes(body)
	if ref == "" {
		ref = d.String()
	}
	hdr := http.Header{"Content-Type": {mediaType}}
	r.send(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, repo, body, hdr, http.StatusCreated).Body.Close()
	return oci.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(body))}
}

// Push seeds an OCI image whose layers are the given bytes (as uncompressed
// tar layers, so diff_ids equal layer digests), tagged tag, and returns the
// manifest digest.
func (r *Registry) Push(t testing.TB, repo, tag string, layers ...[]byte) digest.Digest {
	t.Helper()
	return r.PushImage(t, repo, tag, &oci.Platform{OS: "linux", Architecture: "amd64"}, layers...).Digest
}

// PushImage is Push for a given platform; it returns the manifest
// descriptor with the platform set, ready for PushIndex.
func (r *Registry) PushImage(t testing.TB, repo, tag string, p *oci.Platform, layers ...[]byte) oci.Descriptor {
	t.Helper()
	type rootfs struct {
		Type    string          `json:"type"`
		DiffIDs []digest.Digest `json:"diff_ids"`
	}
	cfg := struct {
		Architecture string         `json:"architecture"`
		OS           string         `json:"os"`
		Variant      string         `json:"variant,omitempty"`
		Config       map[string]any `json:"config"`
		RootFS       rootfs         `json:"rootfs"`
	}{Architecture: p.Architecture, OS: p.OS, Variant: p.Variant, Config: map[string]any{}, RootFS: rootfs{Type: "layers", DiffIDs: []digest.Digest{}}}
	var descs []oci.Descriptor
	for _, l := range layers {
		d := r.PushBlob(t, repo, l)
		descs = append(descs, oci.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: d, Size: int64(len(l))})
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, d)
	}
	cfgBytes := mustJSON(t, cfg)
	cfgDesc := oci.Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: r.PushBlob(t, repo, cfgBytes), Size: int64(len(cfgBytes))}
	m := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeOCIManifest, "config": cfgDesc, "layers": nonNil(descs)}
	desc := r.PushManifest(t, repo, tag, oci.MediaTypeOCIManifest, mustJSON(t, m))
	desc.Platform = p
	return desc
}

// PushIndex seeds an OCI image index of manifests (already in repo) under
// tag ("" for by digest).
func (r *Registry) PushIndex(t testing.TB, repo, tag string, manifests ...oci.Descriptor) oci.Descriptor {
	t.Helper()
	idx := oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeOCIIndex, Manifests: nonNil(manifests)}
	return r.PushManifest(t, repo, tag, oci.MediaTypeOCIIndex, mustJSON(t, idx))
}

// PushReferrer seeds an OCI 1.1 artifact manifest whose subject is subject,
// and, since distribution 2.8 has no referrers API, adds it to the
// tag-schema fallback index the way oras and cosign do. It returns the
// referrer's descriptor as it appears in that index.
func (r *Registry) PushReferrer(t testing.TB, repo string, subject oci.Descriptor, artifactType string, annotations map[string]string) oci.Descriptor {
	t.Helper()
	empty := []byte("{}")
	emptyDesc := oci.Descriptor{MediaType: oci.MediaTypeOCIEmptyJSON, Digest: r.PushBlob(t, repo, empty), Size: 2}
	payload := fmt.Appendf(nil, "payload of a %s for %s", artifactType, subject.Digest)
	layer := oci.Descriptor{MediaType: "application/vnd.arca.test.payload", Digest: r.PushBlob(t, repo, payload), Size: int64(len(payload))}
	subj := oci.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	m := map[string]any{
		"schemaVersion": 2, "mediaType": oci.MediaTypeOCIManifest, "artifactType": artifactType,
		"config": emptyDesc, "layers": []oci.Descriptor{layer}, "subject": subj,
	}
	if len(annotations) > 0 {
		m["annotations"] = annotations
	}
	desc := r.PushManifest(t, repo, "", oci.MediaTypeOCIManifest, mustJSON(t, m))
	desc.ArtifactType, desc.Annotations = artifactType, annotations

	tag := oci.ReferrersTag(subject.Digest)
	idx := oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeOCIIndex}
	if body, ok := r.fetchManifest(t, repo, tag); ok {
		if err := json.Unmarshal(body, &idx); err != nil {
			t.Fatalf("upstreamreg: fallback index %s: %v", tag, err)
		}
	}
	idx.Manifests = append(idx.Manifests, desc)
	r.PushManifest(t, repo, tag, oci.MediaTypeOCIIndex, mustJSON(t, idx))
	return desc
}

// Tag points each of tags at the manifest d already in repo (sequentially:
// distribution 2.8 answers 500 to reads racing concurrent PUTs of one
// manifest).
func (r *Registry) Tag(t testing.TB, repo string, d digest.Digest, tags ...string) {
	t.Helper()
	body, ok := r.fetchManifest(t, repo, d.String())
	if !ok {
		t.Fatalf("upstreamreg: tag %s: manifest %s not in %s", repo, d, repo)
	}
	mt := oci.DetectMediaType("", body)
	for _, tag := range tags {
		r.PushManifest(t, repo, tag, mt, body)
	}
}

func (r *Registry) fetchManifest(t testing.TB, repo, ref string) ([]byte, bool) {
	t.Helper()
	u := r.URL() + "/v2/" + repo + "/manifests/" + ref
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		t.Fatalf("upstreamreg: %v", err)
	}
	req.Header.Set("Accept", oci.MediaTypeOCIIndex+", "+oci.MediaTypeOCIManifest+", "+oci.MediaTypeDockerList+", "+oci.MediaTypeDockerManifest)
	if err := r.Authorize(req, repo); err != nil {
		t.Fatalf("upstreamreg: %v", err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatalf("upstreamreg: GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("upstreamreg: GET %s: %v", u, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return body, true
	case http.StatusNotFound:
		return nil, false
	}
	t.Fatalf("upstreamreg: GET %s: status %d: %s", u, resp.StatusCode, body)
	return nil, false
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("upstreamreg: %v", err)
	}
	return b
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
