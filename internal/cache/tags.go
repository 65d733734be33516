package cache

import (
	"context"
	"fmt"
	"slices"
	"sync"
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

// tagSnapshotTTL is how long an upstream tag list serves the follow-up
// pages of a client paging through it.
const tagSnapshotTTL = 30 * time.Second

// Tags lists the tags of t, sorted: the union of the upstream's (every
// page, with the rule's credentials) and those stored here, so that a
// never-pulled repository lists what it can serve. Concurrent listings of
// one repository share one upstream listing (Coalesced). A follow-up page
// (more, a client's `last` set) reuses the upstream list of the last
// tagSnapshotTTL (Hit), so that paging through N pages costs one upstream
// listing, not N. When the upstream fails, the local tags are answered as
// Stale; an upstream 404 with nothing stored is NAME_UNKNOWN. No catalog
// is ever asked upstream.
func (c *Cache) Tags(ctx context.Context, reg string, t Target, more bool) ([]string, Status, error) {
	type result struct {
		tags []string
		err  error
	}
	key := "tags\x00" + reg + "\x00" + t.Repo
	if more {
		if tags, ok := c.tagPages.get(key); ok {
			local, err := c.localTags(ctx, reg, t.Repo)
			if err != nil {
				return nil, "", err
			}
			c.count("tags", Hit)
			return union(tags, local), Hit, nil
		}
	}
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
		if err == nil {
			c.tagPages.put(key, tags)
		}
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
	return union(up.tags, local), status, nil
}

// union is the sorted union of two tag lists.
func union(a, b []string) []string {
	all := append(slices.Clone(a), b...)
	slices.Sort(all)
	return slices.Compact(all)
}

// tagSnapshots keeps recent upstream tag lists by repository. Entries
// older than tagSnapshotTTL are dropped whenever one is added.
type tagSnapshots struct {
	mu sync.Mutex
	m  map[string]tagSnapshot
}

type tagSnapshot struct {
	tags []string // never modified once stored
	at   time.Time
}

func (s *tagSnapshots) get(key string) ([]string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if !ok || time.Since(e.at) >= tagSnapshotTTL {
		return nil, false
	}
	return e.tags, true
}

func (s *tagSnapshots) put(key string, tags []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]tagSnapshot{}
	}
	for k, e := range s.m {
		if time.Since(e.at) >= tagSnapshotTTL {
			delete(s.m, k)
		}
	}
	s.m[key] = tagSnapshot{tags: tags, at: time.Now()}
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
