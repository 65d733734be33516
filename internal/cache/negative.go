package cache

import (
	"net/http"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/upstream"
)

// negativeCache remembers, for a short time, that a source repository's
// upstream answered 404 for a digest or tag, so that a client's retry loop
// or a scanner asking for content the upstream does not have cannot turn
// into an upstream request storm. Entries are per source repository and
// credential key: other credentials may see other content.
type negativeCache struct {
	ttl time.Duration // 0: off

	mu sync.Mutex
	m  map[negativeKey]time.Time // expiry
}

type negativeKey struct{ source, credKey, ref string }

// maxNegative bounds the entries kept: past it, expired ones are swept,
// and if that is not enough all are dropped (a miss costs one request).
const maxNegative = 100_000

func newNegativeCache(ttl time.Duration) *negativeCache {
	return &negativeCache{ttl: ttl, m: map[negativeKey]time.Time{}}
}

// blobRef is the negative cache's key for blob d (manifests use their
// reference as is): a blob 404 says nothing about a manifest.
func blobRef(d digest.Digest) string { return "blob@" + d.String() }

func keyOf(t Target, ref string) negativeKey {
	return negativeKey{source: t.Upstream.Host + "/" + t.Upstream.Path, credKey: t.Upstream.CredKey, ref: ref}
}

// notFound returns the remembered 404 for ref of t's source, or nil.
func (n *negativeCache) notFound(t Target, op, ref string) error {
	if n.ttl <= 0 {
		return nil
	}
	k := keyOf(t, ref)
	n.mu.Lock()
	exp, ok := n.m[k]
	if ok && !time.Now().Before(exp) {
		delete(n.m, k)
		ok = false
	}
	n.mu.Unlock()
	if !ok {
		return nil
	}
	return &upstream.Error{Op: op, Repo: t.Upstream.String(), StatusCode: http.StatusNotFound,
		Message: "the upstream answered 404 within the last " + n.ttl.String() + " (cached answer)"}
}

// remember records err for ref of t's source when it is an upstream 404,
// for ttl (capped at the cache's TTL).
func (n *negativeCache) remember(t Target, ref string, err error, ttl time.Duration) {
	if n.ttl <= 0 || !upstream.IsNotFound(err) {
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.m) >= maxNegative {
		for k, exp := range n.m {
			if !now.Before(exp) {
				delete(n.m, k)
			}
		}
		if len(n.m) >= maxNegative {
			clear(n.m)
		}
	}
	n.m[keyOf(t, ref)] = now.Add(min(ttl, n.ttl))
}
