package content

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/syncer/artifactkind"
)

// maxConfigRead bounds the image config read for its platform. Configs
// are a few KiB; a larger one is left without a platform rather than
// read whole.
const maxConfigRead = 4 << 20

// Describe works out what repository listings show of manifest parsed,
// whose body is size bytes: its config media type, image size, an
// index's children with their platforms, whether it is a signature, and
// an image's platform (os, architecture, variant, os.version), read from
// its config blob. The attributes are
// Described only once the platform is known: an image whose config blob
// is not stored yet (a pull-through stores the manifest before the
// client fetches the config) is described again later (DescribeListed).
func (s *Store) Describe(ctx context.Context, parsed *oci.Manifest, size int64) (metadata.ManifestAttrs, error) {
	a := metadata.ManifestAttrs{ImageSize: size, Described: true}
	kind := artifactkind.Of(parsed)
	a.Signature = kind.Matches(artifactkind.NotaryProjectSignature) || kind.Matches(artifactkind.CosignSignature)
	for _, c := range parsed.Manifests {
		r := metadata.PlatformRef{Digest: c.Digest}
		if p := c.Platform; p != nil {
			r.Architecture, r.OS, r.Variant, r.OSVersion = p.Architecture, p.OS, p.Variant, p.OSVersion
		}
		a.References = append(a.References, r)
	}
	if parsed.Config == nil {
		return a, nil
	}
	a.ConfigMediaType = parsed.Config.MediaType
	a.ImageSize += parsed.Config.Size
	for _, l := range parsed.Layers {
		a.ImageSize += l.Size
	}
	if !isImageConfig(a.ConfigMediaType) || parsed.Config.Size > maxConfigRead {
		return a, nil
	}
	p, err := s.readPlatform(ctx, parsed.Config.Digest)
	if errors.Is(err, blobstore.ErrNotFound) {
		a.Described = false
		return a, nil
	}
	if err != nil {
		a.Described = false
		return a, err
	}
	a.Architecture, a.OS, a.Variant, a.OSVersion = p.Architecture, p.OS, p.Variant, p.OSVersion
	return a, nil
}

// AttrsRecorder records the attributes of a manifest worked out after it
// was stored (the metadata store).
type AttrsRecorder interface {
	SetManifestAttrs(ctx context.Context, registry, repo string, d digest.Digest, a metadata.ManifestAttrs) error
}

// DescribeListed fills in the attributes of listed manifest m when they
// were not recorded (stored before they were, before its image config
// was stored, or before its platform's variant and os.version were) and records them with rec, so that the next listing reads no
// blob for it. Every listing that shows attributes (/acr/v1/, the portal)
// goes through it. On error m keeps what was recorded: a listing shows
// that rather than failing.
func (s *Store) DescribeListed(ctx context.Context, rec AttrsRecorder, registry, repo string, m *metadata.ManifestInfo) error {
	if m.Attrs.Described {
		return nil
	}
	a, err := s.describeStored(ctx, m.Digest, m.MediaType)
	if err != nil {
		return err
	}
	if !a.Described {
		// Its config is not local (yet): a row described before (marked
		// to be described again by a migration) keeps its platform.
		if m.Attrs.Architecture == "" {
			m.Attrs = a
		}
		return nil
	}
	m.Attrs = a
	if err := rec.SetManifestAttrs(ctx, registry, repo, m.Digest, a); err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("record attributes of manifest %s: %w", m.Digest, err)
	}
	return nil
}

// describeStored describes stored manifest d (of media type mediaType)
// from its bytes, for a row stored before it was described.
func (s *Store) describeStored(ctx context.Context, d digest.Digest, mediaType string) (metadata.ManifestAttrs, error) {
	rc, err := s.Blobs.Open(ctx, d)
	if err != nil {
		return metadata.ManifestAttrs{}, fmt.Errorf("describe manifest %s: %w", d, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, oci.MaxManifestSize+1))
	if err != nil {
		return metadata.ManifestAttrs{}, fmt.Errorf("describe manifest %s: %w", d, err)
	}
	parsed, err := oci.ParseManifest(mediaType, body)
	if err != nil {
		return metadata.ManifestAttrs{}, fmt.Errorf("describe manifest %s: %w", d, err)
	}
	return s.Describe(ctx, parsed, int64(len(body)))
}

func isImageConfig(mt string) bool {
	return mt == artifactkind.OCIImageConfig || mt == artifactkind.DockerImageConfig
}

// readPlatform reads an image config's platform.
func (s *Store) readPlatform(ctx context.Context, d digest.Digest) (oci.Platform, error) {
	rc, err := s.Blobs.Open(ctx, d)
	if err != nil {
		return oci.Platform{}, err
	}
	defer rc.Close()
	var p oci.Platform
	if err := json.NewDecoder(io.LimitReader(rc, maxConfigRead)).Decode(&p); err != nil {
		// Not a config we can read: no platform, and no point trying again.
		return oci.Platform{}, nil
	}
	return p, nil
}
