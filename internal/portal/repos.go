package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
)

// Blobs opens stored content by digest (manifest and config bytes).
type Blobs interface {
	Open(ctx context.Context, d digest.Digest) (io.ReadSeekCloser, error)
}

// Repos reads what a registry holds (the metadata store); nil leaves the
// Repositories page out.
type Repos interface {
	ListRepositories(ctx context.Context, registry, last string, n int) ([]string, bool, error)
	ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error)
	GetTag(ctx context.Context, registry, repo, tag string) (metadata.Tag, error)
	GetManifest(ctx context.Context, registry, repo string, d digest.Digest) (metadata.Manifest, error)
	Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]metadata.Referrer, error)
	// RepositoryPulledAt is when a manifest or blob of repo was last pulled.
	RepositoryPulledAt(ctx context.Context, registry, repo string) (time.Time, error)
}

const (
	reposPerPage = 50
	tagsPerRepo  = 20
	// Bounds on what one tag costs to describe: manifests and configs are
	// small; an index with more children is summarised by its first ones.
	maxManifestRead = 4 << 20
	maxConfigRead   = 1 << 20
	platformsPerTag = 16
)

type repoTag struct {
	Tag, Digest, MediaType, Pull string
	Size                         float64
	Updated                      string
	Pulled                       string   // last pulled, "" never
	Referrers                    []string // artifact types
	Platforms                    []tagPlatform
	MorePlatforms                bool
}

// tagPlatform is one image of a tag: its platform and total size (config +
// layers). Cached is false for an index child not (yet) in the store.
type tagPlatform struct {
	Platform string
	Size     float64
	Cached   bool
}

type repoRow struct {
	Name     string
	Rule     string // the cache rule serving it; "" when pushed
	Pulled   string // last pulled, "" never
	Tags     []repoTag
	MoreTags bool
}

type reposPage struct {
	Repos []repoRow
	Next  string
}

// ruleFor is the rule whose target covers repo (static targets first).
func ruleFor(rs []cacheRule, repo string) string {
	wild := ""
	for _, r := range rs {
		t := r.Properties.TargetRepository
		switch {
		case t == repo:
			return r.Name
		case t == "*", strings.HasSuffix(t, "/*") && strings.HasPrefix(repo, strings.TrimSuffix(t, "*")):
			wild = r.Name
		}
	}
	return wild
}

func (h *Handler) repositories(c *ctx) {
	if h.opts.Repos == nil {
		http.NotFound(c.w, c.r)
		return
	}
	rs, err := list[cacheRule](c, c.api, "cacheRules")
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	names, more, err := h.opts.Repos.ListRepositories(c, c.reg, c.r.URL.Query().Get("after"), reposPerPage)
	if err != nil {
		h.fail(c.w, c.r, err)
		return
	}
	host := c.r.Host
	p := reposPage{}
	for _, name := range names {
		row := repoRow{Name: name, Rule: ruleFor(rs, name)}
		pulled, err := h.opts.Repos.RepositoryPulledAt(c, c.reg, name)
		if err != nil {
			h.fail(c.w, c.r, err)
			return
		}
		row.Pulled = pulledText(pulled)
		tags, moreTags, err := h.opts.Repos.ListTags(c, c.reg, name, "", tagsPerRepo)
		if err != nil {
			h.fail(c.w, c.r, err)
			return
		}
		row.MoreTags = moreTags
		for _, tag := range tags {
			rt, err := h.repoTag(c, name, tag, host)
			if err != nil {
				h.fail(c.w, c.r, err)
				return
			}
			row.Tags = append(row.Tags, rt)
		}
		p.Repos = append(p.Repos, row)
	}
	if more && len(names) > 0 {
		p.Next = names[len(names)-1]
	}
	h.render(c, http.StatusOK, "repos", page{Title: "Repositories", Nav: "repos", Data: p})
}

// pulledText shows a last-pulled time ("" when never pulled).
func pulledText(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func (h *Handler) repoTag(c *ctx, repo, tag, host string) (repoTag, error) {
	rt := repoTag{Tag: tag, Pull: "docker pull " + host + "/" + repo + ":" + tag}
	t, err := h.opts.Repos.GetTag(c, c.reg, repo, tag)
	if errors.Is(err, metadata.ErrNotFound) {
		return rt, nil // deleted since the listing
	}
	if err != nil {
		return rt, err
	}
	rt.Digest, rt.Updated, rt.Pulled = t.Digest.String(), t.UpdatedAt.UTC().Format(time.RFC3339), pulledText(t.PulledAt)
	m, err := h.opts.Repos.GetManifest(c, c.reg, repo, t.Digest)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return rt, err
	}
	rt.MediaType, rt.Size = m.MediaType, float64(m.Size)
	if err == nil && h.opts.Blobs != nil {
		if err := h.describeImages(c, &rt, m); err != nil {
			return rt, err
		}
	}
	refs, err := h.opts.Repos.Referrers(c, c.reg, repo, t.Digest, "")
	if err != nil {
		return rt, err
	}
	for _, r := range refs {
		at := r.ArtifactType
		if at == "" {
			at = r.MediaType
		}
		rt.Referrers = append(rt.Referrers, at)
	}
	return rt, nil
}

// describeImages fills rt.Platforms from the stored manifest: one entry for
// an image, one per child (the first platformsPerTag) for an index. Content
// missing from the store is shown as not cached, not as an error: a pull
// through cache holds only what was pulled.
func (h *Handler) describeImages(c *ctx, rt *repoTag, m metadata.Manifest) error {
	pm, err := h.readManifest(c, m.Digest, m.MediaType)
	if err != nil || pm == nil {
		return err
	}
	if !oci.IsIndex(pm.MediaType) {
		p, err := h.imagePlatform(c, pm)
		if err != nil || p == nil {
			return err
		}
		rt.Platforms = append(rt.Platforms, *p)
		return nil
	}
	for i, d := range pm.Manifests {
		if i == platformsPerTag {
			rt.MorePlatforms = true
			break
		}
		tp := tagPlatform{Platform: d.Platform.String()}
		child, err := h.readManifest(c, d.Digest, d.MediaType)
		if err != nil {
			return err
		}
		if child != nil && !oci.IsIndex(child.MediaType) {
			p, err := h.imagePlatform(c, child)
			if err != nil {
				return err
			}
			if p != nil {
				tp.Size, tp.Cached = p.Size, true
				if tp.Platform == "" {
					tp.Platform = p.Platform
				}
			}
		}
		rt.Platforms = append(rt.Platforms, tp)
	}
	return nil
}

// imagePlatform is an image manifest's platform (from its config, when the
// config is stored and is an image config) and size.
func (h *Handler) imagePlatform(c *ctx, pm *oci.Manifest) (*tagPlatform, error) {
	if pm.Config == nil {
		return nil, nil
	}
	size := pm.Config.Size
	for _, l := range pm.Layers {
		size += l.Size
	}
	tp := &tagPlatform{Size: float64(size), Cached: true}
	b, err := h.readBlob(c, pm.Config.Digest, maxConfigRead)
	if err != nil || b == nil {
		return tp, err
	}
	var p oci.Platform
	if json.Unmarshal(b, &p) == nil && p.OS != "" && p.Architecture != "" {
		tp.Platform = p.String()
	}
	return tp, nil
}

// readManifest parses a stored manifest; nil when it is not stored or does
// not parse (it was validated on the way in, so that is not this page's
// error to report).
func (h *Handler) readManifest(c *ctx, d digest.Digest, mediaType string) (*oci.Manifest, error) {
	b, err := h.readBlob(c, d, maxManifestRead)
	if err != nil || b == nil {
		return nil, err
	}
	pm, err := oci.ParseManifest(mediaType, b)
	if err != nil {
		return nil, nil
	}
	return pm, nil
}

// readBlob reads at most limit bytes of a stored blob; nil when it is not
// stored or larger than limit.
func (h *Handler) readBlob(c *ctx, d digest.Digest, limit int64) ([]byte, error) {
	f, err := h.opts.Blobs.Open(c, d)
	if errors.Is(err, blobstore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", d, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", d, err)
	}
	if int64(len(b)) > limit {
		return nil, nil
	}
	return b, nil
}
