package artifactkind

import (
	"testing"

	"github.com/arcacache/arca/internal/oci"
)

func TestMatches(t *testing.T) {
	image := Artifact{Type: OCIImageConfig, LayerTypes: []string{"application/vnd.oci.image.layer.v1.tar+gzip"}}
	dockerImage := Artifact{Type: DockerImageConfig}
	index := Artifact{Index: true}
	artifactIndex := Artifact{Index: true, Type: "application/vnd.example.bundle"}
	notary := Artifact{Type: NotarySignature, LayerTypes: []string{"application/jose+json"}}
	cosignOCI11 := Artifact{Type: CosignSig}
	cosignTag := Artifact{Type: OCIImageConfig, LayerTypes: []string{CosignSimpleSign}}
	spdx := Artifact{Type: "application/spdx+json"}
	buildkitAttestation := Artifact{Type: OCIImageConfig, LayerTypes: []string{InToto}}
	helm := Artifact{Type: HelmConfig}
	cases := []struct {
		value string
		a     Artifact
		want  bool
	}{
		{"images", image, true},
		{"images", dockerImage, true},
		{"Images", index, true},
		{"images", artifactIndex, false},
		{"images", notary, false},
		{"images", cosignTag, false},
		{"images", buildkitAttestation, false},
		{"notary-project-signature", notary, true},
		{"notary-project-signature", image, false},
		{"cosign-signature", cosignOCI11, true},
		{"cosign-signature", cosignTag, true},
		{"cosign-signature", notary, false},
		{"sbom", spdx, true},
		{"sbom", image, false},
		{"attestation", buildkitAttestation, true},
		{"attestation", Artifact{Type: "application/vnd.dev.sigstore.bundle.v0.3+json"}, true},
		{"attestation", image, false},
		{"helm-chart", helm, true},
		// Full media types match the artifact type exactly, ignoring case.
		{"application/vnd.cncf.notary.signature", notary, true},
		{"Application/SPDX+json", spdx, true},
		{"application/spdx", spdx, false},
		{"application/vnd.oci.image.config.v1+json", image, true},
		{"application/vnd.oci.image.config.v1+json", cosignTag, true},
		{"application/vnd.oci.image.index.v1+json", index, false},
		{"", index, false},
	}
	for _, c := range cases {
		if got := c.a.Matches(c.value); got != c.want {
			t.Errorf("%q matches %+v = %v, want %v", c.value, c.a, got, c.want)
		}
	}
}

func TestOf(t *testing.T) {
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.cncf.notary.signature",
		"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},
		"layers":[{"mediaType":"application/jose+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}`)
	m, err := oci.ParseManifest("", body)
	if err != nil {
		t.Fatal(err)
	}
	a := Of(m)
	if !a.Matches(NotaryProjectSignature) || a.Matches(Images) || a.Index {
		t.Fatalf("Of(notary signature) = %+v", a)
	}
	if !OfDescriptor(oci.Descriptor{MediaType: oci.MediaTypeOCIManifest, ArtifactType: "application/spdx+json"}).Matches(SBOM) {
		t.Fatal("descriptor artifactType not used")
	}
	for _, n := range Names() {
		if !IsAlias(n) || Describe(n) == "" {
			t.Errorf("alias %s has no description", n)
		}
	}
	if IsAlias("application/spdx+json") {
		t.Error("a media type is not an alias")
	}
}
