package oci

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const (
	cfgDigest   = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
	layerDigest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
)

var imageManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfgDigest + `","size":2},
"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + layerDigest + `","size":3}]}`

func TestParseManifest(t *testing.T) {
	cases := []struct {
		name, ct, body string
		wantMT, wantAT string
		wantErr        string
	}{
		{name: "image", ct: MediaTypeOCIManifest, body: imageManifest, wantMT: MediaTypeOCIManifest, wantAT: "application/vnd.oci.image.config.v1+json"},
		{name: "no content type", body: imageManifest, wantMT: MediaTypeOCIManifest},
		{name: "charset parameter", ct: MediaTypeOCIManifest + "; charset=utf-8", body: imageManifest, wantMT: MediaTypeOCIManifest},
		{name: "type only in header", ct: MediaTypeDockerManifest, body: strings.Replace(imageManifest, `"mediaType":"application/vnd.oci.image.manifest.v1+json",`, "", 1), wantMT: MediaTypeDockerManifest},
		{name: "index", ct: MediaTypeOCIIndex, body: `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIIndex + `","manifests":[{"mediaType":"` + MediaTypeOCIManifest + `","digest":"` + layerDigest + `","size":7,"platform":{"os":"linux","architecture":"arm64"}}]}`, wantMT: MediaTypeOCIIndex},
		{name: "artifact type wins", body: strings.Replace(imageManifest, `"config"`, `"artifactType":"application/vnd.cncf.notary.signature","config"`, 1), wantMT: MediaTypeOCIManifest, wantAT: "application/vnd.cncf.notary.signature"},
		{name: "header disagrees", ct: MediaTypeOCIIndex, body: imageManifest, wantErr: "does not match"},
		{name: "no media type", body: `{"schemaVersion":2,"config":{"mediaType":"x","digest":"` + cfgDigest + `","size":1}}`, wantErr: "no media type"},
		{name: "schema 1", ct: MediaTypeDockerSchema1JS, body: `{"schemaVersion":1}`, wantErr: "schema 1"},
		{name: "unknown type", ct: "application/x-foo", body: `{"schemaVersion":2}`, wantErr: "unsupported"},
		{name: "schema version", body: strings.Replace(imageManifest, `"schemaVersion":2`, `"schemaVersion":3`, 1), wantErr: "schemaVersion"},
		{name: "bad digest", body: strings.Replace(imageManifest, layerDigest, "sha256:xyz", 1), wantErr: "layers[0]"},
		{name: "negative size", body: strings.Replace(imageManifest, `"size":3`, `"size":-3`, 1), wantErr: "negative"},
		{name: "index with layers", ct: MediaTypeOCIIndex, body: `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIIndex + `","manifests":[],"layers":[]}`, wantErr: "no config or layers"},
		{name: "missing config", body: `{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","layers":[]}`, wantErr: "config"},
		{name: "not json", body: `{"schemaVersion":`, wantErr: "JSON"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := ParseManifest(c.ct, []byte(c.body))
			if c.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want ErrInvalid mentioning %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != c.wantMT || (c.wantAT != "" && m.ArtifactType != c.wantAT) {
				t.Fatalf("got %q %q", m.MediaType, m.ArtifactType)
			}
		})
	}
}

func TestNamesAndTags(t *testing.T) {
	for name, ok := range map[string]bool{
		"ubuntu": true, "a/b/c": true, "my-app.v2_x": true, "a__b": true, "a--b": true,
		"": false, "Upper": false, "a//b": false, "-a": false, "a-": false, "a/./b": false, "a/../b": false, "a/": false,
		strings.Repeat("a", 256): false,
	} {
		if ValidRepository(name) != ok {
			t.Errorf("ValidRepository(%q) = %v", name, !ok)
		}
	}
	for tag, ok := range map[string]bool{"latest": true, "v1.2.3-rc_1": true, "_x": true, ".x": false, "-x": false, "": false, strings.Repeat("t", 129): false} {
		if ValidTag(tag) != ok {
			t.Errorf("ValidTag(%q) = %v", tag, !ok)
		}
	}
	if got := ReferrersTag(digest.Digest(layerDigest)); got != "sha256-"+strings.TrimPrefix(layerDigest, "sha256:") {
		t.Errorf("ReferrersTag = %s", got)
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add(MediaTypeOCIManifest, []byte(imageManifest))
	f.Add("", []byte(`{"schemaVersion":2,"mediaType":"`+MediaTypeOCIIndex+`","manifests":[{"mediaType":"x","digest":"`+layerDigest+`","size":1}],"subject":{"mediaType":"y","digest":"`+cfgDigest+`","size":2}}`))
	f.Add(MediaTypeDockerList, []byte(`{"schemaVersion":2,"manifests":null}`))
	f.Add("", []byte(`{"schemaVersion":2,"mediaType":"`+MediaTypeOCIManifest+`","config":null}`))
	f.Add("application/json", []byte(`[]`))
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		m, err := ParseManifest(ct, body)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error not ErrInvalid: %v", err)
			}
			return
		}
		if !IsManifestMediaType(m.MediaType) {
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		if IsIndex(m.MediaType) == (m.Config != nil) && m.Config != nil {
			t.Fatalf("index with a config")
		}
		_ = DetectMediaType(ct, body)
	})
}
