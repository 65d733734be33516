package cache

// Additions for active sync (internal/syncer), kept apart from the
// pull-through files. Everything here stores through the same content path
// (c.content) and the same upstream client as pull-through.

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/upstream"
)

// SyncedManifest is a manifest as SyncManifest found or fetched it.
type SyncedManifest struct {
	Record  metadata.Manifest // valid when Stored
	Body    []byte
	Parsed  *oci.Manifest
	Fetched bool // this call fetched it from the upstream
	Stored  bool // it is stored in the repository (false: keep refused it)
}

// SyncManifest makes manifest d of t available and returns its bytes. A
// manifest already stored (in this repository, or as bytes for another) is
// not fetched again. keep, when not nil, sees the parsed manifest before
// anything is stored and may refuse it: active sync's artifact-type
// filters need the body to decide, and a refused manifest must not be
// stored. With keep nil the fetch goes through Manifest, coalesced with
// pull-through requests for the same digest.
func (c *Cache) SyncManifest(ctx context.Context, reg string, t Target, d digest.Digest, keep func(*oci.Manifest) bool) (SyncedManifest, error) {
	rec, err := c.meta.GetManifest(ctx, reg, t.Repo, d)
	if err == nil {
		return c.localManifest(ctx, d, rec)
	}
	if !errors.Is(err, metadata.ErrNotFound) {
		return SyncedManifest{}, err
	}
	if _, err := c.blobs.Stat(ctx, d); err == nil {
		// Same digest, same bytes: link them here instead of fetching, if
		// this repository may have them (see allow).
		if err := c.allow(ctx, reg, t, d, true); err != nil {
			return SyncedManifest{}, err
		}
		body, err := c.readManifest(ctx, d)
		if err != nil {
			return SyncedManifest{}, err
		}
		return c.storeSynced(ctx, reg, t, d, "", body, keep, false)
	}
	if keep == nil {
		rec, status, err := c.Manifest(ctx, reg, t, d.String())
		if err != nil {
			return SyncedManifest{}, err
		}
		sm, err := c.localManifest(ctx, d, rec)
		sm.Fetched = status == Miss
		return sm, err
	}
	// Detached, as pull-through's manifest fetches are: a fetch under way
	// when the sync stops still lands, and is not fetched again on resume.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), manifestFetchTimeout)
	defer cancel()
	um, err := c.up.GetManifest(dctx, t.Upstream, d.String())
	if err != nil {
		c.count("manifest", "error")
		return SyncedManifest{}, c.upstreamFailed(t, "manifest "+d.String(), err)
	}
	if um.Digest != d {
		return SyncedManifest{}, fmt.Errorf("upstream %s served manifest %s for %s", t.Upstream, um.Digest, d)
	}
	c.count("manifest", Miss)
	return c.storeSynced(dctx, reg, t, d, um.MediaType, um.Body, keep, true)
}

// storeSynced stores body as manifest d of t unless keep refuses it.
// mediaType is the upstream's, or "" for bytes stored without one at hand.
func (c *Cache) storeSynced(ctx context.Context, reg string, t Target, d digest.Digest, mediaType string, body []byte, keep func(*oci.Manifest) bool, fetched bool) (SyncedManifest, error) {
	if mediaType == "" {
		mediaType = oci.DetectMediaType("", body)
	}
	parsed, err := parseOnce(mediaType, body)
	if err != nil {
		return SyncedManifest{}, fmt.Errorf("upstream %s for cache rule '%s' served an unusable manifest %s: %w", t.Upstream, t.Rule, d, err)
	}
	sm := SyncedManifest{Body: body, Parsed: parsed, Fetched: fetched}
	if keep != nil && !keep(parsed) {
		return sm, nil
	}
	sm.Record, err = c.content.PutManifest(ctx, reg, t.Repo, d, body, parsed)
	sm.Stored = err == nil
	return sm, err
}

func (c *Cache) localManifest(ctx context.Context, d digest.Digest, rec metadata.Manifest) (SyncedManifest, error) {
	body, err := c.readManifest(ctx, d)
	if err != nil {
		return SyncedManifest{}, err
	}
	parsed, err := parseOnce(rec.MediaType, body)
	if err != nil {
		return SyncedManifest{}, fmt.Errorf("stored manifest %s: %w", d, err)
	}
	return SyncedManifest{Record: rec, Body: body, Parsed: parsed, Stored: true}, nil
}

func (c *Cache) readManifest(ctx context.Context, d digest.Digest) ([]byte, error) {
	rc, err := c.blobs.Open(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d, err)
	}
	defer rc.Close()
	body, err := io.ReadAll(io.LimitReader(rc, oci.MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d, err)
	}
	if len(body) > oci.MaxManifestSize {
		return nil, fmt.Errorf("read manifest %s: larger than %d bytes", d, oci.MaxManifestSize)
	}
	return body, nil
}

// TagManifest points tag of repo at the stored manifest d. Active sync
// tags a manifest last, once what the rule selects of it is stored.
func (c *Cache) TagManifest(ctx context.Context, reg, repo, tag string, d digest.Digest) error {
	rec, err := c.meta.GetManifest(ctx, reg, repo, d)
	if err != nil {
		return fmt.Errorf("tag %s: %w", tag, err)
	}
	return c.meta.PutManifest(ctx, rec, tag)
}

// Credentials returns the credentials of a registry's credential set,
// resolved at use as for rule-backed pulls.
func (s *RuleSet) Credentials(registry, name string) upstream.Credentials {
	return s.credentials(registry, name)
}

// TargetFor maps repo through rule r alone (which need not be stored yet:
// a dry run estimates a rule before it is created).
func (s *RuleSet) TargetFor(registry string, r rules.Rule, repo string) (Target, bool) {
	m, up, ok := rules.NewIndex([]rules.Rule{r}).Match(repo)
	if !ok {
		return Target{}, false
	}
	return s.target(registry, m, repo, up), true
}
