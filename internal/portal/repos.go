package portal

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
)

// Repos reads what a registry holds (the metadata store); nil leaves the
// Repositories page out.
type Repos interface {
	ListRepositories(ctx context.Context, registry, last string, n int) ([]string, bool, error)
	ListTags(ctx context.Context, registry, repo, last string, n int) ([]string, bool, error)
	GetTag(ctx context.Context, registry, repo, tag string) (metadata.Tag, error)
	GetManifest(ctx context.Context, registry, repo string, d digest.Digest) (metadata.Manifest, error)
	Referrers(ctx context.Context, registry, repo string, d digest.Digest, artifactType string) ([]metadata.Referrer, error)
}

const (
	reposPerPage = 50
	tagsPerRepo  = 20
)

type repoTag struct {
	Tag, Digest, MediaType, Pull string
	Size                         float64
	Updated                      string
	Referrers                    []string // artifact types
}

type repoRow struct {
	Name     string
	Rule     string // the cache rule serving it; "" when pushed
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

func (h *Handler) repoTag(c *ctx, repo, tag, host string) (repoTag, error) {
	rt := repoTag{Tag: tag, Pull: "docker pull " + host + "/" + repo + ":" + tag}
	t, err := h.opts.Repos.GetTag(c, c.reg, repo, tag)
	if errors.Is(err, metadata.ErrNotFound) {
		return rt, nil // deleted since the listing
	}
	if err != nil {
		return rt, err
	}
	rt.Digest, rt.Updated = t.Digest.String(), t.UpdatedAt.UTC().Format(time.RFC3339)
	m, err := h.opts.Repos.GetManifest(c, c.reg, repo, t.Digest)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return rt, err
	}
	rt.MediaType, rt.Size = m.MediaType, float64(m.Size)
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
