// Package content is the one path by which bytes become registry content:
// a blob is committed only after its digest is verified, then linked to a
// repository; a manifest's bytes are committed the same way and then
// recorded with its references and tags. Pushes, pull-through fetches and
// active sync all store through it.
package content

import (
	"context"
	"errors"

	"github.com/opencontainers/go-digest"
	"go.opentelemetry.io/otel/attribute"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/tracing"
)

// Uploads keeps upload sessions' progress where every replica sees it (the
// metadata store's uploads rows).
type Uploads interface {
	LoadUploadState(ctx context.Context, id string) (int64, []byte, error)
	SaveUploadState(ctx context.Context, id string, from, size int64, state []byte) error
}

// Index is the metadata store as content needs it.
type Index interface {
	// PrepareBlob is called before a blob's bytes are committed (see
	// metadata.Store: garbage collection leaves them alone).
	PrepareBlob(ctx context.Context, d digest.Digest, size int64) error
	LinkBlob(ctx context.Context, registry, repo string, d digest.Digest, size int64) error
	PutManifest(ctx context.Context, m metadata.Manifest, tags ...string) error
}

// Store commits and records content.
type Store struct {
	Blobs blobstore.Backend
	// Index records content; nil only for offline copies into a store no
	// server runs on (restore, copy-store).
	Index   Index
	Uploads Uploads
	// MaxBlobSize refuses blobs larger than it (0: no limit).
	MaxBlobSize int64
}

// CommitBlob verifies and commits staged bytes as blob d, then links it to
// repo. size < 0 means "whatever was staged".
func (s *Store) CommitBlob(ctx context.Context, w *Writer, registry, repo string, d digest.Digest, size int64) (err error) {
	ctx, span := tracing.Start(ctx, "store blob", attribute.String("oci.digest", d.String()))
	defer func() { tracing.End(span, err) }()
	staged := w.Size()
	if err := w.Commit(ctx, d, size); err != nil {
		return err
	}
	return s.Index.LinkBlob(ctx, registry, repo, d, staged)
}

// PutManifest commits body as manifest d (the caller computed d from body
// with the algorithm it was asked for) and records it with its references
// and tags. parsed is body parsed by oci.ParseManifest.
func (s *Store) PutManifest(ctx context.Context, registry, repo string, d digest.Digest, body []byte, parsed *oci.Manifest, tags ...string) (_ metadata.Manifest, err error) {
	ctx, span := tracing.Start(ctx, "store manifest", attribute.String("oci.digest", d.String()))
	defer func() { tracing.End(span, err) }()
	if err := s.putBytes(ctx, d, body); err != nil {
		return metadata.Manifest{}, err
	}
	m := metadata.Manifest{
		Registry: registry, Repo: repo, Digest: d, MediaType: parsed.MediaType, Size: int64(len(body)),
		ArtifactType: parsed.ArtifactType, Annotations: parsed.Annotations, Refs: Refs(parsed),
	}
	if parsed.Subject != nil {
		m.Subject = parsed.Subject.Digest
	}
	// A config that cannot be read now leaves the manifest undescribed,
	// to be described when listed; it does not fail the store.
	m.Attrs, _ = s.Describe(ctx, parsed, m.Size)
	return m, s.Index.PutManifest(ctx, m, tags...)
}

func (s *Store) putBytes(ctx context.Context, d digest.Digest, body []byte) error {
	// Stored bytes are taken only once garbage collection leaves them be.
	if err := s.Index.PrepareBlob(ctx, d, int64(len(body))); err != nil {
		return err
	}
	_, err := s.Blobs.Stat(ctx, d)
	if err == nil || !errors.Is(err, blobstore.ErrNotFound) {
		return err
	}
	w, err := s.NewWriter(ctx, d, int64(len(body)))
	if err != nil {
		return err
	}
	if _, err := w.Write(body); err != nil {
		w.Cancel()
		return err
	}
	return w.Commit(ctx, d, int64(len(body)))
}

// Refs lists what a manifest needs present in its repository. Layers with
// external URLs (non-distributable) need not be pushed; the subject need
// not exist (referrers may be pushed before their subject).
func Refs(m *oci.Manifest) []metadata.Ref {
	var refs []metadata.Ref
	if m.Config != nil {
		refs = append(refs, metadata.Ref{Digest: m.Config.Digest, Kind: metadata.RefBlob})
	}
	for _, l := range m.Layers {
		if len(l.URLs) == 0 {
			refs = append(refs, metadata.Ref{Digest: l.Digest, Kind: metadata.RefBlob})
		}
	}
	for _, c := range m.Manifests {
		refs = append(refs, metadata.Ref{Digest: c.Digest, Kind: metadata.RefManifest})
	}
	return refs
}
