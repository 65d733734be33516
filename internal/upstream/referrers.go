package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/oci"
)

// Referrers lists the manifests whose subject is subject, through the OCI
// referrers API (following Link pagination). When the upstream lacks the
// API (404, or the 400/405 some registries answer), it reads the
// tag-schema fallback index (oci.ReferrersTag); no index at all is an empty
// list. With artifactType set, the list is filtered here unless the
// server says it filtered (OCI-Filters-Applied: artifactType).
func (c *Client) Referrers(ctx context.Context, r Repo, subject digest.Digest, artifactType string) ([]oci.Descriptor, error) {
	p, err := c.prepare(r)
	if err != nil {
		return nil, err
	}
	if err := subject.Validate(); err != nil {
		return nil, fmt.Errorf("upstream: invalid subject digest %q: %w", subject, err)
	}
	const op = "GET referrers"
	var q url.Values
	if artifactType != "" {
		q = url.Values{"artifactType": {artifactType}}
	}
	u := p.url("/referrers/"+subject.String(), q)
	out := []oci.Descriptor{}
	filtered := false
	for pages := 0; u != nil; pages++ {
		if pages >= maxPages {
			return nil, fmt.Errorf("%s %s: more than %d pages", op, p.repo, maxPages)
		}
		resp, err := c.do(ctx, op, p, http.MethodGet, u, oci.MediaTypeOCIIndex)
		if err != nil {
			return nil, err
		}
		if pages == 0 && noReferrersAPI(resp.StatusCode) {
			drainClose(resp.Body)
			return c.referrersByTag(ctx, r, subject, artifactType)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, statusError(op, p.repo.String(), resp)
		}
		idx, err := readIndex(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, readError(op, p.repo.String(), err)
		}
		filtered = filtered || filterApplied(resp.Header.Values("OCI-Filters-Applied"), "artifactType")
		out = append(out, idx.Manifests...)
		if u, err = nextPage(resp, u); err != nil {
			return nil, fmt.Errorf("%s %s: %w", op, p.repo, err)
		}
	}
	if !filtered {
		out = filterArtifactType(out, artifactType)
	}
	return out, nil
}

func noReferrersAPI(status int) bool {
	return status == http.StatusNotFound || status == http.StatusBadRequest || status == http.StatusMethodNotAllowed
}

// referrersByTag reads the tag-schema fallback index.
func (c *Client) referrersByTag(ctx context.Context, r Repo, subject digest.Digest, artifactType string) ([]oci.Descriptor, error) {
	tag := oci.ReferrersTag(subject)
	m, err := c.GetManifest(ctx, r, tag)
	if IsNotFound(err) {
		return []oci.Descriptor{}, nil
	}
	if err != nil {
		return nil, err
	}
	if !oci.IsIndex(m.MediaType) {
		return nil, fmt.Errorf("upstream %s: referrers fallback tag %s holds a %s, not an image index", r, tag, m.MediaType)
	}
	var idx oci.Index
	if err := json.Unmarshal(m.Body, &idx); err != nil {
		return nil, fmt.Errorf("upstream %s: referrers fallback tag %s: %w", r, tag, err)
	}
	return filterArtifactType(append([]oci.Descriptor{}, idx.Manifests...), artifactType), nil
}

func readIndex(body io.Reader) (*oci.Index, error) {
	var idx oci.Index
	b, err := io.ReadAll(io.LimitReader(body, oci.MaxManifestSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > oci.MaxManifestSize {
		return nil, fmt.Errorf("referrers page larger than %d bytes", oci.MaxManifestSize)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		return nil, fmt.Errorf("decoding referrers index: %w", err)
	}
	return &idx, nil
}

// filterApplied reports whether OCI-Filters-Applied lists name.
func filterApplied(values []string, name string) bool {
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			if strings.TrimSpace(f) == name {
				return true
			}
		}
	}
	return false
}

func filterArtifactType(ds []oci.Descriptor, artifactType string) []oci.Descriptor {
	if artifactType == "" {
		return ds
	}
	out := ds[:0]
	for _, d := range ds {
		if d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return out
}
