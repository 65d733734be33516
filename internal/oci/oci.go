// Package oci knows the shapes of OCI and Docker manifests: their media
// types, the references one manifest makes to others, and the grammar of
// repository names and tags. It parses untrusted input and never panics.
package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Media types the registry stores as manifests.
const (
	MediaTypeOCIManifest     = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex        = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest  = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList      = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeOCIEmptyJSON    = "application/vnd.oci.empty.v1+json"
	MediaTypeDockerSchema1   = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1JS = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// MaxManifestSize bounds a manifest body; the spec suggests registries
// accept at least 4 MiB and may reject larger ones.
const MaxManifestSize = 4 << 20

// IsManifestMediaType reports whether mt is a manifest type we store.
func IsManifestMediaType(mt string) bool {
	switch mt {
	case MediaTypeOCIManifest, MediaTypeOCIIndex, MediaTypeDockerManifest, MediaTypeDockerList:
		return true
	}
	return false
}

// IsIndex reports whether mt is an index or manifest list.
func IsIndex(mt string) bool { return mt == MediaTypeOCIIndex || mt == MediaTypeDockerList }

// Platform is an index entry's platform.
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
}

// String renders os/arch[/variant], the form --platforms uses.
func (p *Platform) String() string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// Descriptor is an OCI content descriptor.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Data         []byte            `json:"data,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
}

// Index is an OCI image index (also the referrers response).
type Index struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Manifests     []Descriptor      `json:"manifests"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// rawManifest is the union of manifest and index fields we read.
type rawManifest struct {
	SchemaVersion *int              `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *Descriptor       `json:"config"`
	Layers        []Descriptor      `json:"layers"`
	Manifests     []Descriptor      `json:"manifests"`
	Subject       *Descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

// Manifest is what the registry needs to know of a parsed manifest.
type Manifest struct {
	MediaType    string
	ArtifactType string // manifest artifactType, else config media type (images: empty index)
	Config       *Descriptor
	Layers       []Descriptor
	Manifests    []Descriptor // index children
	Subject      *Descriptor
	Annotations  map[string]string
}

// ErrInvalid wraps every parse failure.
var ErrInvalid = errors.New("invalid manifest")

func invalid(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
}

// ParseManifest parses body, whose declared Content-Type is contentType
// (may be empty). The media type in the body, when present, must agree.
func ParseManifest(contentType string, body []byte) (*Manifest, error) {
	contentType = baseMediaType(contentType)
	var raw rawManifest
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, invalid("not valid JSON: %v", err)
	}
	mt := raw.MediaType
	switch {
	case mt == "" && contentType == "":
		return nil, invalid("no media type in body or Content-Type")
	case mt == "":
		mt = contentType
	case contentType != "" && contentType != mt:
		return nil, invalid("Content-Type %q does not match mediaType %q", contentType, mt)
	}
	if mt == MediaTypeDockerSchema1 || mt == MediaTypeDockerSchema1JS {
		return nil, invalid("Docker schema 1 manifests are not supported")
	}
	if !IsManifestMediaType(mt) {
		return nil, invalid("unsupported manifest media type %q", mt)
	}
	if raw.SchemaVersion == nil || *raw.SchemaVersion != 2 {
		return nil, invalid("schemaVersion must be 2")
	}
	m := &Manifest{MediaType: mt, ArtifactType: raw.ArtifactType, Subject: raw.Subject, Annotations: raw.Annotations}
	if IsIndex(mt) {
		if raw.Config != nil || raw.Layers != nil {
			return nil, invalid("an index has no config or layers")
		}
		for i, d := range raw.Manifests {
			if err := checkDescriptor(d); err != nil {
				return nil, invalid("manifests[%d]: %v", i, err)
			}
		}
		m.Manifests = raw.Manifests
	} else {
		if raw.Manifests != nil {
			return nil, invalid("an image manifest has no manifests list")
		}
		if raw.Config == nil {
			return nil, invalid("config descriptor is required")
		}
		if err := checkDescriptor(*raw.Config); err != nil {
			return nil, invalid("config: %v", err)
		}
		for i, d := range raw.Layers {
			if err := checkDescriptor(d); err != nil {
				return nil, invalid("layers[%d]: %v", i, err)
			}
		}
		m.Config, m.Layers = raw.Config, raw.Layers
		if m.ArtifactType == "" {
			m.ArtifactType = raw.Config.MediaType
		}
	}
	if m.Subject != nil {
		if err := checkDescriptor(*m.Subject); err != nil {
			return nil, invalid("subject: %v", err)
		}
	}
	return m, nil
}

func checkDescriptor(d Descriptor) error {
	if d.MediaType == "" {
		return errors.New("mediaType is required")
	}
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("digest %q: %v", d.Digest, err)
	}
	if d.Size < 0 {
		return errors.New("size must not be negative")
	}
	return nil
}

// baseMediaType strips parameters (";charset=...") and spaces.
func baseMediaType(ct string) string {
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	return strings.TrimSpace(strings.ToLower(ct))
}

// DetectMediaType returns a manifest body's media type, for bodies fetched
// from an upstream whose Content-Type may be missing or generic.
func DetectMediaType(contentType string, body []byte) string {
	var probe struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
	}
	if json.Unmarshal(body, &probe) == nil && probe.MediaType != "" {
		return probe.MediaType
	}
	if ct := baseMediaType(contentType); IsManifestMediaType(ct) {
		return ct
	}
	if probe.Manifests != nil {
		return MediaTypeOCIIndex
	}
	return MediaTypeOCIManifest
}

// Repository names: path components of lowercase alphanumerics joined by
// separators, components joined by "/" (distribution spec grammar).
var (
	nameRe = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRe  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// MaxNameLength bounds repository names, as distribution does.
const MaxNameLength = 255

// ValidRepository reports whether name follows the spec's name grammar.
func ValidRepository(name string) bool {
	return len(name) > 0 && len(name) <= MaxNameLength && nameRe.MatchString(name)
}

// ValidTag reports whether tag follows the spec's tag grammar.
func ValidTag(tag string) bool { return tagRe.MatchString(tag) }

// ReferrersTag is the tag-schema fallback tag for subject d:
// "<alg>-<hex>" with the spec's truncation.
func ReferrersTag(d digest.Digest) string {
	alg, enc := string(d.Algorithm()), d.Encoded()
	if len(alg) > 32 {
		alg = alg[:32]
	}
	if len(enc) > 64 {
		enc = enc[:64]
	}
	return alg + "-" + enc
}
