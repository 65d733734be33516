package cache

import (
	"context"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
)

// Referrers lists the upstream's referrers of subject (the upstream client
// falls back to the tag schema when the upstream lacks the API). The
// registry merges them with local ones.
func (c *Cache) Referrers(ctx context.Context, t Target, subject digest.Digest, artifactType string) ([]oci.Descriptor, error) {
	list, err := c.up.Referrers(ctx, t.Upstream, subject, artifactType)
	if err != nil {
		return nil, c.upstreamFailed(t, "referrers of "+subject.String(), err)
	}
	return list, nil
}
