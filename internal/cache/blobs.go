package cache

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/tracing"
	"github.com/arcacache/arca/internal/upstream"
)

// BlobSource is a blob ready to serve: either committed local content
// (Reader nil: serve from the store) or an in-flight upstream fetch that
// Reader follows.
type BlobSource struct {
	Size int64 // -1 when the upstream did not say
	// Reader follows an in-flight fetch. Its Read fails (never a clean EOF)
	// if the fetch fails or the content does not match the digest. It
	// implements io.WriterTo, which writes from the fetch's memory.
	Reader io.ReadCloser
}

// Blob makes blob d of target t available, fetching it from the upstream
// when no replica has stored it yet.
func (c *Cache) Blob(ctx context.Context, reg string, t Target, d digest.Digest) (*BlobSource, Status, error) {
	ctx, span := tracing.Start(ctx, "cache lookup blob", attribute.String("arca.rule", t.Rule), attribute.String("oci.digest", d.String()))
	src, st, err := c.blob(ctx, reg, t, d)
	span.SetAttributes(attribute.String("arca.cache", string(st)))
	tracing.End(span, err)
	return src, st, err
}

func (c *Cache) blob(ctx context.Context, reg string, t Target, d digest.Digest) (*BlobSource, Status, error) {
	if size, ok, err := c.local(ctx, reg, t, d); err != nil || ok {
		if err != nil {
			c.count("blob", "error")
			return nil, "", err
		}
		c.count("blob", Hit)
		return &BlobSource{Size: size}, Hit, nil
	}
	if err := c.negative.notFound(t, "GET blob", blobRef(d)); err != nil {
		c.count("blob", "error")
		return nil, "", upstreamError(t, "blob "+d.String(), err)
	}
	f, status, err := c.follow(ctx, reg, t, d)
	if err != nil {
		c.count("blob", "error")
		return nil, "", err
	}
	c.count("blob", status)
	if f.stored { // stored by a fetch that ended just before ours began
		f.release()
		return &BlobSource{Size: f.size}, status, nil
	}
	return &BlobSource{Size: f.size, Reader: &follower{f: f, ctx: ctx}}, status, nil
}

// follow joins (or starts) the fetch of d for t and waits until its bytes
// can be followed. The caller releases the fetch.
func (c *Cache) follow(ctx context.Context, reg string, t Target, d digest.Digest) (*fetch, Status, error) {
	f, leader, err := c.join(ctx, reg, t, d)
	if err != nil {
		return nil, "", err
	}
	select {
	case <-f.started:
	case <-ctx.Done():
		f.release()
		return nil, "", ctx.Err()
	}
	if f.startErr != nil {
		f.release()
		c.negative.remember(t, blobRef(d), f.startErr, c.negative.ttl)
		return nil, "", upstreamError(t, "blob "+d.String(), f.startErr)
	}
	switch {
	case f.stored:
		return f, Hit, nil
	case leader:
		return f, Miss, nil
	}
	return f, Coalesced, nil
}

// StatBlob answers a HEAD: the size of blob d of t, from local content or,
// when nothing is stored yet, from an upstream HEAD (nothing is fetched).
func (c *Cache) StatBlob(ctx context.Context, reg string, t Target, d digest.Digest) (int64, Status, error) {
	if size, ok, err := c.local(ctx, reg, t, d); err != nil || ok {
		return size, Hit, err
	}
	if err := c.negative.notFound(t, "HEAD blob", blobRef(d)); err != nil {
		return 0, "", upstreamError(t, "blob "+d.String(), err)
	}
	size, err := c.up.HeadBlob(ctx, t.Upstream, d)
	if err != nil {
		c.negative.remember(t, blobRef(d), err, c.negative.ttl)
		return 0, "", c.upstreamFailed(t, "blob "+d.String(), err)
	}
	return size, Miss, nil
}

// Prefetch stores blob d of t without a client attached, waiting for the
// result (active sync uses it: the same fetch path as pull-through). It
// waits for the fetch to commit without reading what it staged.
func (c *Cache) Prefetch(ctx context.Context, reg string, t Target, d digest.Digest) (Status, error) {
	if _, ok, err := c.local(ctx, reg, t, d); err != nil || ok {
		return Hit, err
	}
	f, status, err := c.follow(ctx, reg, t, d)
	if err != nil {
		return "", err
	}
	defer f.release()
	select {
	case <-f.finished:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if f.err != nil {
		return "", upstreamError(t, "blob "+d.String(), f.err)
	}
	return status, nil
}

// local returns the size of blob d when t's repository can serve it from
// local content: linked to the repository, or stored (for another
// repository) and allowed for this one, in which case it is linked now.
func (c *Cache) local(ctx context.Context, reg string, t Target, d digest.Digest) (int64, bool, error) {
	size, err := c.meta.BlobSize(ctx, reg, t.Repo, d)
	if err == nil {
		return size, true, nil
	}
	if !errors.Is(err, metadata.ErrNotFound) {
		return 0, false, err
	}
	size, err = c.blobs.Stat(ctx, d)
	if errors.Is(err, blobstore.ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	if err := c.allow(ctx, reg, t, d, false); err != nil {
		return 0, false, err
	}
	if err := c.meta.LinkBlob(ctx, reg, t.Repo, d, size); err != nil {
		if errors.Is(err, metadata.ErrNotFound) { // garbage collection is deleting it: fetch again
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("link stored blob %s to %s: %w", d, t.Repo, err)
	}
	return size, true, nil
}

// allow decides whether t's repository may take on content d that is
// stored but not its own (stored for another repository, which may be
// behind another rule, upstream or credential set): only when one of its
// manifests references d, or when its own upstream confirms that its
// source repository has d (a HEAD). Content is addressed by digest, but
// who may read it is not: without this, asking any rule-backed repository
// for a digest would read another repository's content. This is the one
// place that decides it (blob GET and HEAD, sync, cross-repository mount
// from a rule-backed repository); access control of the request to t.Repo
// comes before it.
func (c *Cache) allow(ctx context.Context, reg string, t Target, d digest.Digest, manifest bool) error {
	ok, err := c.meta.References(ctx, reg, t.Repo, d)
	if err != nil || ok {
		return err
	}
	what := "blob " + d.String()
	if manifest {
		what = "manifest " + d.String()
		var desc upstream.Descriptor
		desc, err = c.up.HeadManifest(ctx, t.Upstream, d.String())
		if err == nil && desc.Digest != "" && desc.Digest != d {
			err = fmt.Errorf("upstream answered manifest %s for %s", desc.Digest, d)
		}
	} else {
		_, err = c.up.HeadBlob(ctx, t.Upstream, d)
	}
	if err != nil {
		return upstreamError(t, what, err)
	}
	return nil
}

// Allowed reports whether blob d may be served from t's repository without
// fetching: linked to it, or stored and allowed for it (then linked). The
// registry's cross-repository mount from a rule-backed repository asks it.
func (c *Cache) Allowed(ctx context.Context, reg string, t Target, d digest.Digest) (int64, bool, error) {
	size, ok, err := c.local(ctx, reg, t, d)
	var refused *errcode.Error
	if errors.As(err, &refused) { // not confirmed upstream: not mountable
		return 0, false, nil
	}
	return size, ok, err
}

// join returns the in-flight fetch of d for t, starting one if there is
// none, and records t's repository for linking once the fetch commits.
// Fetches are keyed by what decides their outcome: the upstream
// repository, the credentials and the digest. A request through another
// rule (another upstream, registry or credential set) never rides on a
// fetch whose failure or whose content it has no claim to. Only map
// operations happen under c.mu. The caller holds a reference until release.
func (c *Cache) join(ctx context.Context, reg string, t Target, d digest.Digest) (*fetch, bool, error) {
	key := fetchKey{host: t.Upstream.Host, path: t.Upstream.Path, cred: t.Upstream.CredKey, d: d}
	link := repoRef{reg: reg, repo: t.Repo}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.inflight[key]; f != nil {
		f.addLink(link)
		f.mu.Lock()
		f.refs++
		f.mu.Unlock()
		return f, false, nil
	}
	if c.closing {
		return nil, false, errShuttingDown
	}
	f := newFetch(key)
	f.trace = trace.SpanFromContext(ctx) // the leader's request: the fetch's spans are its children
	f.addLink(link)
	c.inflight[key] = f
	c.wg.Add(1)
	go c.run(f, reg, t)
	return f, true, nil
}

var errShuttingDown = errors.New("the server is shutting down")

type fetchKey struct {
	host, path, cred string
	d                digest.Digest
}

type repoRef struct{ reg, repo string }

// run is the one upstream transfer of a blob: stream it to its followers
// from memory and into a staged writer; release the last byte once the
// digest verifies; then commit and link every follower's repository.
func (c *Cache) run(f *fetch, reg string, t Target) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(trace.ContextWithSpan(c.base, f.trace), c.timeout)
	defer cancel()
	ctx, span := tracing.Start(ctx, "fetch blob", attribute.String("arca.upstream", t.Upstream.String()), attribute.String("oci.digest", f.key.d.String()))
	err := c.transfer(ctx, f, reg, t)
	tracing.End(span, err)
	if err == nil {
		c.linkAll(ctx, f, t)
	} else {
		c.mu.Lock()
		delete(c.inflight, f.key)
		c.mu.Unlock()
	}
	f.finish(err)
	if err != nil {
		c.log.Warn("blob fetch failed", "rule", t.Rule, "upstream", t.Upstream.String(), "digest", f.key.d, "err", err)
	}
}

// linkAll links the blob to every repository that joined the fetch,
// including those that join while it links; the fetch leaves the map only
// when none is left, so a request that missed the stored blob just before
// the commit still finds the fetch and is linked. A link that fails is
// logged: the client already has verified bytes, and the next request
// links again.
func (c *Cache) linkAll(ctx context.Context, f *fetch, t Target) {
	for {
		c.mu.Lock()
		pending := f.links[f.linked:]
		f.linked = len(f.links)
		if len(pending) == 0 {
			delete(c.inflight, f.key)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		for _, l := range pending {
			if err := c.meta.LinkBlob(ctx, l.reg, l.repo, f.key.d, f.committed); err != nil {
				c.log.Warn("link fetched blob", "rule", t.Rule, "repo", l.repo, "digest", f.key.d, "err", err)
			}
		}
	}
}

func (c *Cache) transfer(ctx context.Context, f *fetch, reg string, t Target) error {
	d := f.key.d
	// A fetch that ended between the caller's look and its join may have
	// stored d: take it under the same rule as any stored blob.
	if stored, err := c.takeStored(ctx, f, reg, t); stored {
		return err
	}
	rc, size, err := c.open(ctx, f, t)
	if errors.Is(err, errStoredMeanwhile) {
		if stored, err := c.takeStored(ctx, f, reg, t); stored {
			return err
		}
		err = fmt.Errorf("blob %s: %w, but not found", d, errStoredMeanwhile)
	}
	if err != nil {
		f.start(nil, 0, err)
		return err
	}
	defer rc.Close()
	// Cancelled on failure: it also stops an upload that follows a spool.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A fetch that follows another replica's writes nothing to the blob
	// store while it streams: that replica stores the blob. Its bytes are
	// spooled here, for this replica's clients and in case they must be
	// stored after all (settle).
	_, followed := rc.(*peerStream)
	var (
		w      *content.Writer
		staged blobstore.Staged
		sink   io.Writer
		sp     *spool
	)
	if !followed {
		if w, err = c.content.NewWriter(ctx, d, size); err != nil {
			f.start(nil, 0, err)
			return err
		}
		// nil when the backend cannot read a part while it is written
		if staged, _, err = w.StagedReader(); err != nil {
			w.Cancel()
			f.start(nil, 0, err)
			return err
		}
		sink = w
	}
	if staged == nil {
		if sp, err = newSpool(c.spoolDir, d); err != nil {
			if w != nil {
				w.Cancel()
			}
			f.start(nil, 0, err)
			return err
		}
		staged, sink = sp, sp
	}
	f.start(staged, size, nil)
	if sp != nil && w != nil {
		sp.upload(ctx, f, w)
	}
	// Reading the upstream runs ahead of writing and hashing, so the
	// upstream connection keeps flowing while a chunk is written. Followers
	// read each chunk from memory as soon as it arrives.
	stop := make(chan struct{})
	defer close(stop)
	chunks := readAhead(rc, f.pool, fetchChunks, stop)
	var got int64
	fail := func(err error) error {
		cancel()
		if w != nil {
			if sp != nil {
				_ = sp.wait() // the upload no longer uses w
			}
			w.Cancel()
		}
		return err
	}
	for ch := range chunks {
		if ch.err != nil {
			return fail(fmt.Errorf("upstream transfer cut after %d bytes: %w", got, ch.err))
		}
		n := int64(len(ch.b))
		if size >= 0 && got+n > size {
			f.pool.put(ch.b)
			return fail(fmt.Errorf("upstream sent more than the %d bytes it announced", size))
		}
		got += n
		mc := f.publish(ch.b)
		_, werr := sink.Write(ch.b)
		f.wrote(mc)
		if werr != nil {
			return fail(werr)
		}
		c.metrics.bytesUpstream.Add(float64(n))
	}
	if sp != nil {
		if err := sp.verify(d, size); err != nil {
			return fail(err)
		}
	} else if err := w.Verify(ctx, d, size); err != nil {
		return err
	}
	// Verified: followers may complete now. Durability (the rest of a
	// spool's upload, fsync, rename, metadata) follows off their path; if
	// it fails, nothing is recorded and the next request fetches again.
	f.verify()
	if followed {
		return c.settle(ctx, f, reg, t, sp)
	}
	if sp != nil {
		if err := sp.wait(); err != nil {
			w.Cancel()
			return fmt.Errorf("store fetched blob: %w", err)
		}
	}
	return c.commit(ctx, f, w, reg, t, size, got)
}

// commit makes the verified bytes in w blob d of t's repository.
func (c *Cache) commit(ctx context.Context, f *fetch, w *content.Writer, reg string, t Target, size, got int64) error {
	if err := c.content.CommitBlob(ctx, w, reg, t.Repo, f.key.d, size); err != nil {
		return fmt.Errorf("commit fetched blob: %w", err)
	}
	f.committed = got
	c.mu.Lock()
	f.linked = 1 // CommitBlob linked the leader's repository, links[0]
	c.mu.Unlock()
	return nil
}

// takeStored starts f as a fetch of what is stored already, if d is
// stored (for any repository) and t's repository may take it on.
func (c *Cache) takeStored(ctx context.Context, f *fetch, reg string, t Target) (bool, error) {
	size, err := c.blobs.Stat(ctx, f.key.d)
	if err != nil {
		return false, nil
	}
	if err := c.allow(ctx, reg, t, f.key.d, false); err != nil {
		f.start(nil, 0, err)
		return true, err
	}
	f.stored, f.committed = true, size
	f.start(nil, size, nil)
	return true, nil
}
