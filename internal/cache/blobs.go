package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/metadata"
)

// BlobSource is a blob ready to serve: either committed local content
// (Reader nil: serve from the store) or an in-flight upstream fetch that
// Reader follows.
type BlobSource struct {
	Size int64 // -1 when the upstream did not say
	// Reader follows an in-flight fetch. Its Read fails (never a clean EOF)
	// if the fetch fails or the content does not match the digest.
	Reader io.ReadCloser
}

// Blob makes blob d of target t available, fetching it from the upstream
// when no replica has stored it yet.
func (c *Cache) Blob(ctx context.Context, reg string, t Target, d digest.Digest) (*BlobSource, Status, error) {
	if size, err := c.meta.BlobSize(ctx, reg, t.Repo, d); err == nil {
		c.count("blob", Hit)
		return &BlobSource{Size: size}, Hit, nil
	} else if !errors.Is(err, metadata.ErrNotFound) {
		return nil, "", err
	}
	// Content is addressed by digest: a blob stored for another repository
	// is the same bytes, so link it rather than fetch it again.
	if size, err := c.blobs.Stat(ctx, d); err == nil {
		if err := c.meta.LinkBlob(ctx, reg, t.Repo, d, size); err != nil {
			return nil, "", err
		}
		c.count("blob", Hit)
		return &BlobSource{Size: size}, Hit, nil
	}
	if err := c.negative.notFound(t, "GET blob", blobRef(d)); err != nil {
		c.count("blob", "error")
		return nil, "", upstreamError(t, "blob "+d.String(), err)
	}
	f, leader := c.join(reg, t, d)
	status := Coalesced
	if leader {
		status = Miss
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
		c.count("blob", "error")
		return nil, "", upstreamError(t, "blob "+d.String(), f.startErr)
	}
	if f.staged == nil { // committed before we got here
		f.release()
		c.count("blob", Hit)
		return &BlobSource{Size: f.size}, Hit, nil
	}
	c.count("blob", status)
	return &BlobSource{Size: f.size, Reader: &follower{f: f, ctx: ctx}}, status, nil
}

// StatBlob answers a HEAD: the size of blob d of t, from local content or,
// when nothing is stored yet, from an upstream HEAD (nothing is fetched).
func (c *Cache) StatBlob(ctx context.Context, reg string, t Target, d digest.Digest) (int64, Status, error) {
	if size, err := c.meta.BlobSize(ctx, reg, t.Repo, d); err == nil {
		return size, Hit, nil
	} else if !errors.Is(err, metadata.ErrNotFound) {
		return 0, "", err
	}
	if size, err := c.blobs.Stat(ctx, d); err == nil {
		return size, Hit, c.meta.LinkBlob(ctx, reg, t.Repo, d, size)
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
// result (active sync uses it: the same fetch path as pull-through).
func (c *Cache) Prefetch(ctx context.Context, reg string, t Target, d digest.Digest) (Status, error) {
	src, status, err := c.Blob(ctx, reg, t, d)
	if err != nil || src.Reader == nil {
		return status, err
	}
	defer src.Reader.Close()
	if _, err := io.Copy(io.Discard, src.Reader); err != nil {
		return status, err
	}
	return status, nil
}

// join returns the in-flight fetch of d, starting one if there is none.
// The caller holds a reference until release.
func (c *Cache) join(reg string, t Target, d digest.Digest) (*fetch, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.inflight[d]; f != nil {
		f.mu.Lock()
		f.refs++
		f.mu.Unlock()
		return f, false
	}
	f := &fetch{d: d, started: make(chan struct{}), progress: make(chan struct{}), refs: 1}
	// Re-check under the lock: a fetch that just finished has committed the
	// blob before leaving the map.
	if size, err := c.blobs.Stat(context.Background(), d); err == nil {
		f.size = size
		close(f.started)
		f.done = true
		_ = c.meta.LinkBlob(context.Background(), reg, t.Repo, d, size)
		return f, false
	}
	c.inflight[d] = f
	c.wg.Add(1)
	go c.run(f, reg, t)
	return f, true
}

// run is the one upstream transfer of a blob: stream into a staged writer
// while followers read behind it; commit only if the digest verifies.
func (c *Cache) run(f *fetch, reg string, t Target) {
	defer c.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	err := c.transfer(ctx, f, reg, t)
	c.mu.Lock()
	delete(c.inflight, f.d)
	c.mu.Unlock()
	f.finish(err)
	if err != nil {
		c.log.Warn("upstream blob fetch failed", "rule", t.Rule, "upstream", t.Upstream.String(), "digest", f.d, "err", err)
	}
}

func (c *Cache) transfer(ctx context.Context, f *fetch, reg string, t Target) error {
	rc, size, err := c.up.GetBlob(ctx, t.Upstream, f.d)
	if err != nil {
		f.start(nil, 0, err)
		return err
	}
	defer rc.Close()
	w, err := c.blobs.Create(ctx, blobstore.NewID())
	if err != nil {
		f.start(nil, 0, err)
		return err
	}
	staged, err := w.StagedReader()
	if err != nil {
		w.Cancel()
		f.start(nil, 0, err)
		return err
	}
	f.start(staged, size, nil)
	// Reading the upstream runs ahead of writing and hashing, so the
	// upstream connection keeps flowing while a chunk is hashed.
	stop := make(chan struct{})
	defer close(stop)
	chunks := readAhead(rc, fetchChunks, fetchChunk, stop)
	for ch := range chunks {
		if ch.err != nil {
			w.Cancel()
			return fmt.Errorf("upstream transfer cut after %d bytes: %w", w.Size(), ch.err)
		}
		n := len(ch.b)
		if size >= 0 && w.Size()+int64(n) > size {
			ch.release()
			w.Cancel()
			return fmt.Errorf("upstream sent more than the %d bytes it announced", size)
		}
		_, werr := w.Write(ch.b)
		ch.release()
		if werr != nil {
			w.Cancel()
			return werr
		}
		c.metrics.bytesUpstream.Add(float64(n))
		f.advance(int64(n))
	}
	return c.content.CommitBlob(ctx, w, reg, t.Repo, f.d, size)
}

// A fetch reads the upstream in fetchChunk pieces, at most fetchChunks
// ahead of the writer: constant memory per transfer.
const (
	fetchChunk  = 256 << 10
	fetchChunks = 8
)

type chunk struct {
	b    []byte
	err  error
	free chan []byte
}

func (c chunk) release() { c.free <- c.b[:cap(c.b)] }

// readAhead reads r into a ring of n buffers of size bytes and sends the
// filled ones, then a final chunk carrying any error other than EOF, then
// closes the channel. It gives up when stop is closed (the consumer left).
func readAhead(r io.Reader, n, size int, stop <-chan struct{}) <-chan chunk {
	out := make(chan chunk, n)
	free := make(chan []byte, n)
	for i := 0; i < n; i++ {
		free <- make([]byte, size)
	}
	send := func(c chunk) bool {
		select {
		case out <- c:
			return true
		case <-stop:
			return false
		}
	}
	go func() {
		defer close(out)
		for {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			m, err := io.ReadAtLeast(r, b, 1)
			if m > 0 && !send(chunk{b: b[:m], free: free}) {
				return
			}
			if m == 0 {
				free <- b
			}
			if err == io.EOF {
				return
			}
			if err != nil {
				send(chunk{err: err})
				return
			}
		}
	}()
	return out
}

// fetch is one in-flight upstream transfer shared by all its readers.
type fetch struct {
	d       digest.Digest
	started chan struct{} // closed when bytes can be followed, or on failure to start

	// Set before started is closed, read-only after.
	staged   blobstore.Staged
	size     int64
	startErr error

	mu       sync.Mutex
	written  int64
	done     bool
	err      error
	progress chan struct{} // closed and replaced on every advance
	refs     int           // readers holding the staged file open
	closed   bool          // staged file closed
}

func (f *fetch) start(staged blobstore.Staged, size int64, err error) {
	f.staged, f.size, f.startErr = staged, size, err
	close(f.started)
}

func (f *fetch) advance(n int64) {
	f.mu.Lock()
	f.written += n
	ch := f.progress
	f.progress = make(chan struct{})
	f.mu.Unlock()
	close(ch)
}

func (f *fetch) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	ch := f.progress
	f.progress = make(chan struct{})
	f.closeIfUnused()
	f.mu.Unlock()
	close(ch)
}

// release drops a reader's reference; the staged file closes once the
// fetch is done and no reader is left.
func (f *fetch) release() {
	f.mu.Lock()
	f.refs--
	f.closeIfUnused()
	f.mu.Unlock()
}

// closeIfUnused must be called with f.mu held.
func (f *fetch) closeIfUnused() {
	if f.refs == 0 && f.done && f.staged != nil && !f.closed {
		f.closed = true
		f.staged.Close()
	}
}

// follower reads an in-flight fetch from the staged file. It holds back
// the final byte until the digest is verified, so a client can never see a
// complete body of content that failed verification.
type follower struct {
	f      *fetch
	ctx    context.Context
	off    int64
	closed bool
}

func (r *follower) Read(p []byte) (int, error) {
	for {
		r.f.mu.Lock()
		written, done, err, wait := r.f.written, r.f.done, r.f.err, r.f.progress
		r.f.mu.Unlock()
		if done && err != nil {
			return 0, fmt.Errorf("upstream fetch failed: %w", err)
		}
		limit := written
		if !done {
			limit--
		}
		if r.off < limit {
			n := int64(len(p))
			if n > limit-r.off {
				n = limit - r.off
			}
			m, rerr := r.f.staged.ReadAt(p[:n], r.off)
			r.off += int64(m)
			if m > 0 {
				return m, nil
			}
			if rerr != nil {
				return 0, rerr
			}
		}
		if done {
			return 0, io.EOF
		}
		select {
		case <-wait:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

func (r *follower) Close() error {
	if !r.closed {
		r.closed = true
		r.f.release()
	}
	return nil
}
