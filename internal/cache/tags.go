package cache

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/upstream"
)

// tagListTimeout bounds listing an upstream's tags (all pages). The
// listing is detached from the request so that joiners do not fail when
// the request that started it leaves.
const tagListTimeout = 2 * time.Minute

// localTagPage is the page size of reading a repository's local tags.
const localTagPage = 1000

// Tags lists the tags of t, sorted: the union of the upstream's (every
// page, with the rule's credentials) and those stored here, so that a
// never-pulled repository lists what it can serve. Concurrent listings of
// one repository share one upstream listing (Coalesced). When the upstream
// fails, the local tags are answered as Stale; an upstream 404 with
// nothing stored is NAME_UNKNOWN. No catalog is ever asked upstream.
func (c *Cache) Tags(ctx context.Context, reg string, t Target) ([]string, Status, error) {
	type result struct {
		tags []string
		err  error
	}
	key := "tags\x00" + reg + "\x00" + t.Repo
	v, _, shared := c.group.Do(key, func() (any, error) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), tagListTimeout)
		defer cancel()
		var tags []string
		err := c.up.Tags(dctx, t.Upstream, func(page []string) error {
			for _, tag := range page {
				if oci.ValidTag(tag) { // what we could not serve is not listed
					tags = append(tags, tag)
				}
			}
			return nil
		})
		return result{tags, err}, nil
	})
	up := v.(result)
	local, err := c.localTags(ctx, reg, t.Repo)
	if err != nil {
		return nil, "", err
	}
	status := Miss
	if shared {
		status = Coalesced
	}
	if up.err != nil {
		if upstream.IsNotFound(up.err) && len(local) == 0 {
			return nil, "", errcode.New(errcode.NameUnknown, fmt.Sprintf("repository %s is not found in source '%s' for cache rule '%s'", t.Repo, t.Upstream, t.Rule))
		}
		c.log.Warn("upstream tags unavailable; serving the cached ones", "rule", t.Rule, "repo", t.Repo, "upstream", t.Upstream.String(), "err", up.err)
		c.count("tags", Stale)
		return local, Stale, nil
	}
	c.count("tags", status)
	all := append(slices.Clone(up.tags), local...)
	slices.Sort(all)
	return slices.Compact(all), status, nil
}

// localTags reads every tag of repo stored here.
func (c *Cache) localTags(ctx context.Context, reg, repo string) ([]string, error) {
	var out []string
	for last := ""; ; {
		page, more, err := c.meta.ListTags(ctx, reg, repo, last, localTagPage)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if !more || len(page) == 0 {
			return out, nil
		}
		last = page[len(page)-1]
	}
}
