// Package artifactkind says what kind of artifact a manifest is, for active
// sync's artifact-type filters (--include-artifact-types and
// --exclude-artifact-types). A filter value is either a full media type,
// matched exactly (ignoring case) against the manifest's artifact type, or
// one of the aliases below, which name a family of media types. The
// acrcache README's own example, "images,notary-project-signature", is
// written with aliases.
//
// A manifest's artifact type is its artifactType field; without one, an
// image manifest's config media type (OCI 1.1's rule); a plain index (no
// artifactType) is an image index and counts as "images". A referrer known
// only by its descriptor (from a referrers listing) is judged by the
// descriptor's artifactType.
//
// It imports nothing of arca but oci, so that rule validation can use it.
package artifactkind

import (
	"slices"
	"strings"

	"github.com/arcacache/arca/internal/oci"
)

// Aliases, documented in Describe.
const (
	Images                 = "images"
	NotaryProjectSignature = "notary-project-signature"
	CosignSignature        = "cosign-signature"
	SBOM                   = "sbom"
	Attestation            = "attestation"
	HelmChart              = "helm-chart"
)

// Media types the aliases are made of.
const (
	OCIImageConfig    = "application/vnd.oci.image.config.v1+json"
	DockerImageConfig = "application/vnd.docker.container.image.v1+json"
	NotarySignature   = "application/vnd.cncf.notary.signature"
	CosignSig         = "application/vnd.dev.cosign.artifact.sig.v1+json"
	CosignSimpleSign  = "application/vnd.dev.cosign.simplesigning.v1+json"
	InToto            = "application/vnd.in-toto+json"
	HelmConfig        = "application/vnd.cncf.helm.config.v1+json"
)

// Names lists the aliases, for messages and documentation.
func Names() []string {
	return []string{Images, NotaryProjectSignature, CosignSignature, SBOM, Attestation, HelmChart}
}

// Describe says what an alias matches ("" for a non-alias).
func Describe(alias string) string {
	switch strings.ToLower(alias) {
	case Images:
		return "container images and image indexes: artifact type " + OCIImageConfig + " or " + DockerImageConfig +
			" (unless the layers are cosign signing or in-toto payloads), or an index without artifactType"
	case NotaryProjectSignature:
		return NotarySignature
	case CosignSignature:
		return CosignSig + ", or a manifest with " + CosignSimpleSign + " layers (cosign's .sig tags)"
	case SBOM:
		return strings.Join(sbomTypes(), ", ")
	case Attestation:
		return strings.Join(attestationTypes(), ", ") + ", or a manifest with " + InToto + " layers (BuildKit attestations)"
	case HelmChart:
		return HelmConfig
	}
	return ""
}

func sbomTypes() []string {
	return []string{"application/spdx+json", "text/spdx", "application/vnd.cyclonedx+json", "application/vnd.cyclonedx+xml",
		"application/vnd.syft+json", "application/vnd.dev.cosign.artifact.sbom.v1+json", "application/vnd.spdx+json"}
}

func attestationTypes() []string {
	return []string{InToto, "application/vnd.dsse.envelope.v1+json", "application/vnd.dev.sigstore.bundle.v0.3+json",
		"application/vnd.dev.sigstore.bundle+json", "application/vnd.dev.cosign.artifact.att.v1+json"}
}

// IsAlias reports whether v names an alias.
func IsAlias(v string) bool { return Describe(v) != "" }

// Artifact is what a filter looks at.
type Artifact struct {
	// Type is the artifact type: artifactType, else the config media type;
	// "" for an index without artifactType.
	Type string
	// Index is set for image indexes and manifest lists.
	Index bool
	// LayerTypes are the layers' media types, when known.
	LayerTypes []string
}

// Of describes a parsed manifest.
func Of(m *oci.Manifest) Artifact {
	a := Artifact{Type: m.ArtifactType, Index: oci.IsIndex(m.MediaType)}
	for _, l := range m.Layers {
		a.LayerTypes = append(a.LayerTypes, l.MediaType)
	}
	return a
}

// OfDescriptor describes a manifest known by its descriptor only.
func OfDescriptor(d oci.Descriptor) Artifact {
	return Artifact{Type: d.ArtifactType, Index: oci.IsIndex(d.MediaType)}
}

// Matches reports whether a filter value (alias or media type) matches a.
func (a Artifact) Matches(value string) bool {
	t := strings.ToLower(a.Type)
	switch v := strings.ToLower(strings.TrimSpace(value)); v {
	case Images:
		if a.Index {
			return t == ""
		}
		return (t == OCIImageConfig || t == DockerImageConfig) && !a.hasLayer(CosignSimpleSign) && !a.hasLayer(InToto)
	case NotaryProjectSignature:
		return t == NotarySignature
	case CosignSignature:
		return t == CosignSig || a.hasLayer(CosignSimpleSign)
	case SBOM:
		return slices.Contains(sbomTypes(), t)
	case Attestation:
		return slices.Contains(attestationTypes(), t) || (!a.Index && a.hasLayer(InToto))
	case HelmChart:
		return t == HelmConfig
	default:
		return t != "" && t == v
	}
}

// MatchesAny reports whether any of values matches a.
func (a Artifact) MatchesAny(values []string) bool {
	for _, v := range values {
		if a.Matches(v) {
			return true
		}
	}
	return false
}

func (a Artifact) hasLayer(mt string) bool {
	for _, l := range a.LayerTypes {
		if strings.EqualFold(l, mt) {
			return true
		}
	}
	return false
}
