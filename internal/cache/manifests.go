package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"go.opentelemetry.io/otel/attribute"

	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/tracing"
	"github.com/arcacache/arca/internal/upstream"
)

// manifestFetchTimeout bounds a manifest fetch, which is detached from the
// request that started it so joiners do not fail when the leader leaves.
const manifestFetchTimeout = 2 * time.Minute

// Manifest makes manifest ref (a tag or a digest) of target t available
// locally and returns its record. Digests are immutable: once stored they
// never need the upstream. Tags are revalidated with a HEAD when their last
// check is older than the revalidation interval.
func (c *Cache) Manifest(ctx context.Context, reg string, t Target, ref string) (metadata.Manifest, Status, error) {
	ctx, span := tracing.Start(ctx, "cache lookup manifest", attribute.String("arca.rule", t.Rule), attribute.String("oci.reference", ref))
	m, st, err := c.manifest(ctx, reg, t, ref)
	span.SetAttributes(attribute.String("arca.cache", string(st)))
	tracing.End(span, err)
	return m, st, err
}

func (c *Cache) manifest(ctx context.Context, reg string, t Target, ref string) (metadata.Manifest, Status, error) {
	if d, err := digest.Parse(ref); err == nil {
		m, err := c.meta.GetManifest(ctx, reg, t.Repo, d)
		if err == nil {
			c.count("manifest", Hit)
			return m, Hit, nil
		}
		if !errors.Is(err, metadata.ErrNotFound) {
			return m, "", err
		}
		return c.fetchManifest(ctx, reg, t, ref, "")
	}
	tag, err := c.meta.GetTag(ctx, reg, t.Repo, ref)
	if errors.Is(err, metadata.ErrNotFound) {
		return c.fetchManifest(ctx, reg, t, ref, ref)
	}
	if err != nil {
		return metadata.Manifest{}, "", err
	}
	cached, err := c.meta.GetManifest(ctx, reg, t.Repo, tag.Digest)
	if errors.Is(err, metadata.ErrNotFound) {
		return c.fetchManifest(ctx, reg, t, ref, ref)
	}
	if err != nil {
		return cached, "", err
	}
	if time.Since(tag.CheckedAt) < c.revalidate {
		c.count("manifest", Hit)
		return cached, Hit, nil
	}
	return c.revalidateTag(ctx, reg, t, ref, cached)
}

// revalidateTag asks the upstream (HEAD, which Docker Hub does not count as
// a pull) whether tag still points at cached. Any failure, including an
// upstream 404, serves the cached manifest: a cache exists to keep clusters
// pulling when the upstream misbehaves, and a tag that vanished upstream
// stays pullable here until someone deletes it (as ACR keeps tags deleted
// upstream). A revalidation slower than the revalidation timeout serves
// the cached manifest too and finishes in the background.
func (c *Cache) revalidateTag(ctx context.Context, reg string, t Target, tag string, cached metadata.Manifest) (metadata.Manifest, Status, error) {
	key := "revalidate\x00" + reg + "\x00" + t.Repo + "\x00" + tag
	type result struct {
		m      metadata.Manifest
		status Status
	}
	stale := func(err error) (metadata.Manifest, Status, error) {
		c.log.Warn("upstream revalidation failed; serving cached manifest", "rule", t.Rule,
			"upstream", t.Upstream.String(), "tag", tag, "digest", cached.Digest, "err", err)
		c.count("manifest", Stale)
		return cached, Stale, nil
	}
	if err := c.negative.notFound(t, "HEAD manifest", tag); err != nil {
		return stale(err)
	}
	ch := c.group.DoChan(key, func() (any, error) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), manifestFetchTimeout)
		defer cancel()
		if m, ok := c.storedFor(dctx, reg, t, tag, tag); ok { // revalidated by a flight that just ended
			return result{m, Hit}, nil
		}
		desc, err := c.up.HeadManifest(dctx, t.Upstream, tag)
		if err == nil && desc.Digest == cached.Digest {
			if err := c.meta.TouchTag(dctx, reg, t.Repo, tag); err != nil {
				return nil, err
			}
			return result{cached, Hit}, nil
		}
		if err == nil {
			m, status, ferr := c.fetchManifest(dctx, reg, t, tag, tag)
			if ferr == nil {
				return result{m, status}, nil
			}
			err = ferr
		}
		c.negative.remember(t, tag, err, c.revalidate)
		return result{cached, Stale}, err
	})
	timer := time.NewTimer(c.revalWait)
	defer timer.Stop()
	select {
	case res := <-ch:
		if res.Err != nil {
			return stale(res.Err)
		}
		r := res.Val.(result)
		if r.status != Miss {
			c.count("manifest", r.status)
		}
		return r.m, r.status, nil
	case <-timer.C:
		return stale(fmt.Errorf("no answer within the revalidation timeout (%s); revalidation goes on in the background", c.revalWait))
	case <-ctx.Done():
		return cached, "", ctx.Err()
	}
}

// fetchManifest fetches ref from the upstream and stores it (tagged tag
// when tag is not empty). Concurrent fetches of the same ref share one
// upstream request.
func (c *Cache) fetchManifest(ctx context.Context, reg string, t Target, ref, tag string) (metadata.Manifest, Status, error) {
	if err := c.negative.notFound(t, "GET manifest", ref); err != nil {
		c.count("manifest", "error")
		return metadata.Manifest{}, "", upstreamError(t, "manifest "+ref, err)
	}
	key := "manifest\x00" + reg + "\x00" + t.Repo + "\x00" + ref
	leader, stored, byReplica := false, false, false
	v, err, _ := c.group.Do(key, func() (any, error) {
		leader = true
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), manifestFetchTimeout)
		defer cancel()
		// A flight for ref may have ended between our lookup and this one:
		// look again before going upstream.
		if m, ok := c.storedFor(dctx, reg, t, ref, tag); ok {
			stored = true
			return m, nil
		}
		m, ok, done, err := c.manifestLease(dctx, reg, t.Repo, ref, func() (metadata.Manifest, bool) {
			return c.storedFor(dctx, reg, t, ref, tag)
		})
		var um *upstream.Manifest
		switch {
		case errors.Is(err, errNotFoundElsewhere): // as if asked here
			err = &upstream.Error{Op: "GET manifest", Repo: t.Upstream.String(), StatusCode: http.StatusNotFound,
				Message: "the upstream answered another replica's fetch of it 404 just now"}
		case err != nil:
			return nil, fmt.Errorf("manifest fetch lease: %w", err)
		case ok: // another replica fetched it
			byReplica = true
			return m, nil
		default:
			um, err = c.up.GetManifest(dctx, t.Upstream, ref)
			if err != nil {
				done(err)
			} else {
				defer done(nil) // once stored: the waiters find it
			}
		}
		if err != nil {
			ttl := c.revalidate // a tag may appear upstream any time
			if tag == "" {
				ttl = c.negative.ttl
			}
			c.negative.remember(t, ref, err, ttl)
			return nil, c.upstreamFailed(t, "manifest "+ref, err)
		}
		parsed, err := parseOnce(um.MediaType, um.Body)
		if err != nil {
			return nil, errcode.New(errcode.FailedDependency, fmt.Sprintf("upstream %s for cache rule '%s' served an unusable manifest for %s: %v", t.Upstream, t.Rule, ref, err))
		}
		var tags []string
		if tag != "" {
			tags = append(tags, tag)
		}
		return c.content.PutManifest(dctx, reg, t.Repo, um.Digest, um.Body, parsed, tags...)
	})
	status := Coalesced
	switch {
	case leader && byReplica: // another replica's fetch: coalesced too
		status = Coalesced
	case leader && stored:
		status = Hit
	case leader:
		status = Miss
	}
	if err != nil {
		c.count("manifest", "error")
		return metadata.Manifest{}, "", err
	}
	c.count("manifest", status)
	return v.(metadata.Manifest), status, nil
}

// storedFor returns the manifest ref names if it is stored: by digest, or
// by a tag checked within the revalidation interval.
func (c *Cache) storedFor(ctx context.Context, reg string, t Target, ref, tag string) (metadata.Manifest, bool) {
	d, err := digest.Parse(ref)
	if err != nil {
		if tag == "" {
			return metadata.Manifest{}, false
		}
		tg, err := c.meta.GetTag(ctx, reg, t.Repo, tag)
		if err != nil || time.Since(tg.CheckedAt) >= c.revalidate {
			return metadata.Manifest{}, false
		}
		d = tg.Digest
	}
	m, err := c.meta.GetManifest(ctx, reg, t.Repo, d)
	return m, err == nil
}

// upstreamFailed logs an upstream failure in full (the client's answer
// leaves the upstream's words out) and returns the client's answer.
func (c *Cache) upstreamFailed(t Target, what string, err error) error {
	lvl := slog.LevelWarn
	if upstream.IsNotFound(err) {
		lvl = slog.LevelDebug
	}
	c.log.Log(context.Background(), lvl, "upstream request failed", "rule", t.Rule, "upstream", t.Upstream.String(), "what", what, "err", err)
	return upstreamError(t, what, err)
}

// upstreamError turns an upstream failure into the client's answer: an
// upstream 404 stays a 404; anything else is ACR's 424 Failed Dependency,
// naming the rule and what went wrong in words of ours: the upstream's
// status and code, never its error body (which may come from an internal
// service a redirect pointed at).
func upstreamError(t Target, what string, err error) error {
	var ee *errcode.Error
	if errors.As(err, &ee) {
		return ee
	}
	var e *errcode.Error
	var ue *upstream.Error
	reason := err.Error()
	if errors.As(err, &ue) {
		reason = ue.Summary()
	}
	switch {
	case upstream.IsNotFound(err):
		code := errcode.ManifestUnknown
		if strings.HasPrefix(what, "blob") {
			code = errcode.BlobUnknown
		}
		e = errcode.New(code, fmt.Sprintf("%s not found in source '%s' for cache rule '%s'", what, t.Upstream, t.Rule))
	case ue != nil && ue.StatusCode == http.StatusTooManyRequests:
		e = errcode.New(errcode.FailedDependency, fmt.Sprintf("too many requests to source registry for cache rule '%s' (%s)", t.Rule, reason))
	default:
		e = errcode.New(errcode.FailedDependency, fmt.Sprintf("request to pull %s from source '%s' for cache rule '%s' has failed: %s", what, t.Upstream, t.Rule, reason))
	}
	e.Cause = err
	return e
}

// parseOnce parses a manifest once, with the media type already known (the
// upstream client determined it from the header and body); only when that
// contradicts the body's own mediaType does it parse again by the body.
func parseOnce(mediaType string, body []byte) (*oci.Manifest, error) {
	parsed, err := oci.ParseManifest(mediaType, body)
	if err != nil && mediaType != "" {
		if p, err2 := oci.ParseManifest("", body); err2 == nil {
			return p, nil
		}
	}
	return parsed, err
}
