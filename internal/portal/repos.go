package portal

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
)

// Repos reads what a registry holds (the metadata store); nil leaves the
// Repositories page out.
type Repos interface {
	ListRepositories(ctx context.Context, registry, last string, n int) ([]string, bool, error)
	ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error)
	GetTag(ctx context.Context, registry, repo, tag string) (metadata.Tag, error)
	// ManifestInfo is a manifest with the attributes recorded when it was
	// stored (platform, image size, an index's children).
	ManifestInfo(ctx context.Context, registry, repo string, d digest.Digest) (metadata.ManifestInfo, error)
	content.AttrsRecorder
	Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]metadata.Referrer, error)
	// RepositoryPulledAt is when a manifest or blob of repo was last pulled.
	RepositoryPulledAt(ctx context.Context, registry, repo string) (time.Time, error)
}

// Describer describes a manifest stored before its attributes were
// recorded, and records them (content.Store, as /acr/v1/ listings do).
type Describer interface {
	DescribeListed(ctx context.Context, rec content.AttrsRecorder, registry, repo string, m *metadata.ManifestInfo) error
}

const (
	reposPerPage = 50
	tagsPerRepo  = 20
	// An index with more children is summarised by its first ones.
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

// tagPlatform is one image of a tag: its platform and image size (manifest
// + config + layers, as /acr/v1/ reports it). Cached is false for an index
// child not (yet) in the store.
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
	m, err := h.manifest(c, repo, t.Digest)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return rt, err
	}
	rt.MediaType, rt.Size = m.MediaType, float64(m.Size)
	if err == nil {
		if err := h.describeImages(c, &rt, repo, m); err != nil {
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

// manifest is manifest d of repo with its attributes, described now if
// they were not recorded yet.
func (h *Handler) manifest(c *ctx, repo string, d digest.Digest) (metadata.ManifestInfo, error) {
	m, err := h.opts.Repos.ManifestInfo(c, c.reg, repo, d)
	if err != nil || h.opts.Describer == nil {
		return m, err
	}
	if err := h.opts.Describer.DescribeListed(c, h.opts.Repos, c.reg, repo, &m); err != nil {
		h.log.Warn("describe manifest", "registry", c.reg, "repo", repo, "digest", d, "err", err)
	}
	return m, nil
}

// describeImages fills rt.Platforms from the manifest's recorded
// attributes: one entry for an image, one per child (the first
// platformsPerTag) for an index. A child missing from the store is shown
// as not cached, not as an error: a pull through cache holds only what was
// pulled.
func (h *Handler) describeImages(c *ctx, rt *repoTag, repo string, m metadata.ManifestInfo) error {
	if !oci.IsIndex(m.MediaType) {
		if m.Attrs.ConfigMediaType != "" {
			rt.Platforms = append(rt.Platforms, tagPlatform{Platform: platform(m.Attrs.OS, m.Attrs.Architecture, m.Attrs.Variant), Size: float64(m.Attrs.ImageSize), Cached: true})
		}
		return nil
	}
	for i, ref := range m.Attrs.References {
		if i == platformsPerTag {
			rt.MorePlatforms = true
			break
		}
		tp := tagPlatform{Platform: platform(ref.OS, ref.Architecture, ref.Variant)}
		child, err := h.manifest(c, repo, ref.Digest)
		if err != nil && !errors.Is(err, metadata.ErrNotFound) {
			return err
		}
		if err == nil {
			tp.Size, tp.Cached = float64(child.Attrs.ImageSize), true
			if tp.Platform == "" {
				tp.Platform = platform(child.Attrs.OS, child.Attrs.Architecture, child.Attrs.Variant)
			}
		}
		rt.Platforms = append(rt.Platforms, tp)
	}
	return nil
}

// platform is os/architecture[/variant] as recorded ("" when unknown).
func platform(os, arch, variant string) string {
	if os == "" || arch == "" {
		return ""
	}
	return (&oci.Platform{OS: os, Architecture: arch, Variant: variant}).String()
}
