package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/upstream"
)

// Several replicas on one metadata store fetch each blob from its upstream
// once: the replica whose fetch starts first takes the blob's fetch lease
// (a row in the store) and fetches; a fetch of the same blob starting on
// another replica meanwhile reads the holder's stream over the holder's
// internal endpoint (PeerPath) instead of the upstream. The bytes it reads
// go through the same path as upstream bytes (content.Writer hashes them,
// the last byte is held back until the digest verified, only verified
// bytes are committed), so a follower replica trusts its peer no more
// than an upstream. The lease is renewed while the fetch makes progress
// and released when it ends; a holder that dies stops renewing and its
// lease lapses after Cluster.LeaseTTL, when another replica takes it over.

// PeerPath is the internal endpoint a lease holder serves its in-flight
// fetches on (query: host, path, cred, digest).
const PeerPath = "/arca-internal/v1/fetch"

// FetchLeases is the metadata store's fetch lease table.
type FetchLeases interface {
	AcquireFetchLease(ctx context.Context, key, holder, addr string, ttl time.Duration) (metadata.FetchLease, bool, error)
	ReleaseFetchLease(ctx context.Context, key, holder string) error
	SettleFetchLease(ctx context.Context, key, holder, outcome string, ttl time.Duration) error
}

// Cluster configures fetching across replicas. Nil in Options: every
// fetch goes to the upstream (a single node).
type Cluster struct {
	Leases FetchLeases
	// Holder names this replica in lease rows.
	Holder string
	// Addr is the base URL other replicas reach this replica's internal
	// endpoint at; "" advertises none: followers of this replica's fetches
	// wait until the blob is stored.
	Addr string
	// Client reaches other replicas.
	Client *http.Client
	// Token returns the credential a request to another replica carries
	// (Authorization: Bearer).
	Token func(ctx context.Context) (string, error)
	// LeaseTTL is how long a lease lasts unless renewed (default 10s):
	// the longest a dead holder delays the blob's next fetch.
	LeaseTTL time.Duration
	// Poll is how often a replica waiting for another's fetch looks again
	// (default 200ms).
	Poll time.Duration
}

func (cl *Cluster) validate() error {
	if cl.Leases == nil || cl.Holder == "" || cl.Client == nil || cl.Token == nil {
		return errors.New("cache: a cluster needs leases, a holder name, an HTTP client and a token source")
	}
	if cl.LeaseTTL <= 0 {
		cl.LeaseTTL = 10 * time.Second
	}
	if cl.Poll <= 0 {
		cl.Poll = 200 * time.Millisecond
	}
	return nil
}

// errStoredMeanwhile: another replica stored the blob while this one
// waited for its fetch; take the stored blob.
var errStoredMeanwhile = errors.New("stored by another replica meanwhile")

// leaseKey names the fetch of key in the lease table.
func leaseKey(key fetchKey) string {
	h := sha256.Sum256([]byte(key.host + "\x00" + key.path + "\x00" + key.cred + "\x00" + key.d.String()))
	return hex.EncodeToString(h[:])
}

// open returns the stream a fetch reads: the upstream's, or on a cluster
// the stream of the replica that holds the blob's fetch lease, taking the
// lease over when its holder is gone. errStoredMeanwhile reports that the
// blob was stored while this replica waited.
func (c *Cache) open(ctx context.Context, f *fetch, t Target) (io.ReadCloser, int64, error) {
	if c.cluster == nil {
		return c.up.GetBlob(ctx, t.Upstream, f.key.d)
	}
	rc, size, peer, err := c.source(ctx, f, t)
	if err != nil || !peer {
		return rc, size, err
	}
	return &peerStream{c: c, ctx: ctx, f: f, t: t, rc: rc, peer: true, size: size}, size, nil
}

// source takes the lease (and reads the upstream) or follows its holder
// (peer true); see open.
func (c *Cache) source(ctx context.Context, f *fetch, t Target) (rc io.ReadCloser, size int64, peer bool, err error) {
	cl := c.cluster
	key := leaseKey(f.key)
	for {
		lease, got, err := cl.Leases.AcquireFetchLease(ctx, key, cl.Holder, cl.Addr, cl.LeaseTTL)
		if err != nil {
			return nil, 0, false, err
		}
		if got {
			rc, size, err := c.openLeased(ctx, f, t, key)
			return rc, size, false, err
		}
		if lease.Holder != "" && lease.Addr != "" {
			rc, size, err := c.openPeer(ctx, lease.Addr, f.key)
			if err == nil {
				c.metrics.peerFollows.Inc()
				return rc, size, true, nil
			}
			c.log.Debug("following another replica's fetch", "replica", lease.Holder, "digest", f.key.d, "err", err)
		}
		// The holder advertises no address, is not reachable (dead: its
		// lease lapses), or its fetch is no longer in flight: the blob is
		// stored, or the lease is released or lapses soon.
		if _, err := c.blobs.Stat(ctx, f.key.d); err == nil {
			return nil, 0, false, errStoredMeanwhile
		}
		select {
		case <-time.After(cl.Poll):
		case <-ctx.Done():
			return nil, 0, false, ctx.Err()
		}
	}
}

// maxResumes bounds how often one fetch moves to another source.
const maxResumes = 3

// peerStream is another replica's fetch, followed. When that stream is cut
// (the replica died, or its fetch failed), it goes on from the same offset
// with the next source: another replica that took the lease over, the
// upstream under the lease this replica takes, or the stored blob. The
// bytes already read are skipped in the new stream, not compared: the
// digest check at the end covers what the fetch assembled, so this
// replica's clients see a pause, not a cut.
type peerStream struct {
	c       *Cache
	ctx     context.Context
	f       *fetch
	t       Target
	rc      io.ReadCloser
	peer    bool // rc is a peer's stream (only those are resumed)
	size    int64
	off     int64
	broken  error // a read error that came with bytes, handled next Read
	resumes int
}

func (r *peerStream) Read(p []byte) (int, error) {
	for {
		if r.broken != nil {
			if err := r.resume(r.broken); err != nil {
				return 0, err
			}
			r.broken = nil
		}
		n, err := r.rc.Read(p)
		r.off += int64(n)
		switch {
		case err == nil || err == io.EOF:
			return n, err
		case n > 0:
			r.broken = err
			return n, nil
		}
		r.broken = err
	}
}

func (r *peerStream) resume(cause error) error {
	if !r.peer || r.resumes >= maxResumes || r.ctx.Err() != nil {
		return cause
	}
	r.resumes++
	r.rc.Close()
	r.c.log.Info("the replica this fetch followed is gone or failed; resuming", "digest", r.f.key.d, "offset", r.off, "err", cause)
	rc, size, peer, err := r.c.source(r.ctx, r.f, r.t)
	if errors.Is(err, errStoredMeanwhile) {
		rc, size, err = r.c.openStored(r.ctx, r.f.key.d, r.off)
	} else if err == nil {
		_, err = io.CopyN(io.Discard, rc, r.off)
		if err != nil {
			rc.Close()
		}
	}
	if err == nil && size >= 0 && r.size >= 0 && size != r.size {
		rc.Close()
		err = fmt.Errorf("new source announces %d bytes, the first %d", size, r.size)
	}
	if err != nil {
		// Keep a closed stream in place: Close stays safe.
		return fmt.Errorf("%w (resuming at %d: %v)", cause, r.off, err)
	}
	r.rc, r.peer = rc, peer
	return nil
}

func (r *peerStream) Close() error { return r.rc.Close() }

// openStored opens stored blob d at offset off.
func (c *Cache) openStored(ctx context.Context, d digest.Digest, off int64) (io.ReadCloser, int64, error) {
	size, err := c.blobs.Stat(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	rc, err := c.blobs.Open(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	if _, err := rc.Seek(off, io.SeekStart); err != nil {
		rc.Close()
		return nil, 0, err
	}
	return rc, size, nil
}

// openLeased fetches from the upstream under the lease this replica just
// took; closing the stream releases the lease. The lease is renewed while
// the fetch waits for the upstream's answer (bounded by the upstream
// client's header timeout) and then while bytes arrive (and, once all
// have, until the fetch ends), so a fetch that stalls loses it and another
// replica may take over.
func (c *Cache) openLeased(ctx context.Context, f *fetch, t Target, key string) (io.ReadCloser, int64, error) {
	// Stored by the previous holder just before it released the lease.
	if _, err := c.blobs.Stat(ctx, f.key.d); err == nil {
		c.releaseFetchLease(key, "digest", f.key.d)
		return nil, 0, errStoredMeanwhile
	}
	l := &leasedBody{}
	last := int64(-1)
	l.lease = c.holdFetchLease(ctx, key, func() bool {
		if !l.opened.Load() {
			return true // waiting for the upstream's answer
		}
		n := l.read.Load()
		if n == last && !l.eof.Load() {
			return false // no progress: let the lease lapse
		}
		last = n
		return true
	}, "digest", f.key.d)
	rc, size, err := c.up.GetBlob(ctx, t.Upstream, f.key.d)
	if err != nil {
		l.lease.end()
		return nil, 0, err
	}
	l.rc = rc
	l.opened.Store(true)
	return l, size, nil
}

// leasedBody is an upstream stream read under a fetch lease.
type leasedBody struct {
	rc     io.ReadCloser
	lease  *heldLease
	opened atomic.Bool // rc is set: the upstream answered
	read   atomic.Int64
	eof    atomic.Bool
}

func (l *leasedBody) Read(p []byte) (int, error) {
	n, err := l.rc.Read(p)
	l.read.Add(int64(n))
	if err == io.EOF {
		l.eof.Store(true)
	}
	return n, err
}

// Close ends the upstream stream and gives the lease back; the fetch
// closes it once it committed (or failed).
func (l *leasedBody) Close() error {
	err := l.rc.Close()
	l.lease.end()
	return err
}

// heldLease is a fetch lease this replica holds while its fetch runs:
// renewed every third of the lease TTL, released by end.
type heldLease struct {
	c     *Cache
	key   string
	attrs []any // what the fetch is, for the log
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// holdFetchLease keeps lease key, just taken, until end is called:
// renewed every third of the lease TTL, except when progress (nil: the
// fetch is alive, which is enough) reports that the fetch moved no further
// since the last renewal, so a stalled fetch loses its lease and another
// replica may take over. A holder that dies stops renewing too; ctx ending
// stops the renewals.
func (c *Cache) holdFetchLease(ctx context.Context, key string, progress func() bool, logAttrs ...any) *heldLease {
	h := &heldLease{c: c, key: key, attrs: logAttrs, stop: make(chan struct{}), done: make(chan struct{})}
	go h.renew(ctx, progress)
	return h
}

func (h *heldLease) renew(ctx context.Context, progress func() bool) {
	defer close(h.done)
	cl := h.c.cluster
	tick := time.NewTicker(cl.LeaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if progress != nil && !progress() {
			continue
		}
		if _, got, err := cl.Leases.AcquireFetchLease(ctx, h.key, cl.Holder, cl.Addr, cl.LeaseTTL); err != nil || !got {
			h.c.log.Warn("renew fetch lease", append(h.attrs, "held", got, "err", err)...)
		}
	}
}

// end stops the renewals and gives the lease back (once).
func (h *heldLease) end() {
	h.once.Do(func() {
		h.stopRenewing()
		h.c.releaseFetchLease(h.key, h.attrs...)
	})
}

// settle stops the renewals and leaves the lease with outcome for keep
// (once, or end), for the replicas waiting for this fetch. A failure only
// makes them wait until the lease lapses and fetch themselves.
func (h *heldLease) settle(outcome string, keep time.Duration) {
	h.once.Do(func() {
		h.stopRenewing()
		cl := h.c.cluster
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := cl.Leases.SettleFetchLease(ctx, h.key, cl.Holder, outcome, keep); err != nil {
			h.c.log.Warn("settle fetch lease", append(h.attrs, "outcome", outcome, "err", err)...)
		}
	})
}

// stopRenewing waits for a renewal in progress, which would otherwise take
// the lease again after its release.
func (h *heldLease) stopRenewing() {
	close(h.stop)
	<-h.done
}

// openPeer follows the fetch of key in flight on the replica at addr.
func (c *Cache) openPeer(ctx context.Context, addr string, key fetchKey) (io.ReadCloser, int64, error) {
	q := url.Values{"host": {key.host}, "path": {key.path}, "cred": {key.cred}, "digest": {key.d.String()}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, addr+PeerPath+"?"+q.Encode(), nil)
	if err != nil {
		return nil, 0, err
	}
	tok, err := c.cluster.Token(ctx)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := c.cluster.Client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("replica %s: %s", addr, resp.Status)
	}
	size := int64(-1)
	if s := resp.Header.Get(peerSizeHeader); s != "" {
		if size, err = strconv.ParseInt(s, 10, 64); err != nil {
			resp.Body.Close()
			return nil, 0, fmt.Errorf("replica %s: bad %s %q", addr, peerSizeHeader, s)
		}
	}
	return resp.Body, size, nil
}

// peerSizeHeader carries the size the upstream announced (absent: none).
const peerSizeHeader = "X-Arca-Blob-Size"

// ServePeer serves another replica's request for a fetch in flight here
// (the caller has authenticated it as a replica): the same stream the
// fetch's local clients follow, the last byte held back until the digest
// verified. 404 when no such fetch is in flight, 502 when it failed to
// start; a fetch that fails mid-stream cuts the response.
func (c *Cache) ServePeer(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d, err := digest.Parse(q.Get("digest"))
	if err != nil {
		http.Error(w, "bad digest", http.StatusBadRequest)
		return
	}
	key := fetchKey{host: q.Get("host"), path: q.Get("path"), cred: q.Get("cred"), d: d}
	c.mu.Lock()
	f := c.inflight[key]
	if f != nil {
		f.mu.Lock()
		f.refs++
		f.mu.Unlock()
	}
	c.mu.Unlock()
	if f == nil {
		http.Error(w, "no such fetch in flight", http.StatusNotFound)
		return
	}
	defer f.release()
	select {
	case <-f.started:
	case <-r.Context().Done():
		return
	}
	switch {
	case f.startErr != nil:
		http.Error(w, "fetch failed to start", http.StatusBadGateway)
		return
	case f.stored:
		http.Error(w, "stored", http.StatusNotFound)
		return
	}
	if f.size >= 0 {
		w.Header().Set(peerSizeHeader, strconv.FormatInt(f.size, 10))
		w.Header().Set("Content-Length", strconv.FormatInt(f.size, 10))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	rd := &follower{f: f, ctx: r.Context()}
	if _, err := rd.WriteTo(flushWriter{w}); err != nil {
		// Cut the response: the follower replica must not see a clean end.
		panic(http.ErrAbortHandler)
	}
}

// flushWriter flushes after every write: a follower replica's clients get
// bytes as they arrive here.
type flushWriter struct{ w http.ResponseWriter }

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if fl, ok := f.w.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

// UseCluster makes the cache fetch through cl's leases (before it serves).
func (c *Cache) UseCluster(cl *Cluster) error {
	if err := cl.validate(); err != nil {
		return err
	}
	c.cluster = cl
	return nil
}

// settle makes the verified bytes of a fetch that followed another replica
// (spooled in sp) stored, writing them to the blob store only when that
// replica did not: the holder commits before it releases the lease, so
// this replica waits until the blob is in the store (then only its
// repositories are linked) or the lease is free or its own (it resumed from
// the upstream) with the blob still missing: the holder's commit failed,
// and this replica commits its own verified copy. Its clients already have
// their bytes; this only delays when the fetch ends.
func (c *Cache) settle(ctx context.Context, f *fetch, reg string, t Target, sp *spool) error {
	cl := c.cluster
	key := leaseKey(f.key)
	for {
		if size, err := c.blobs.Stat(ctx, f.key.d); err == nil {
			f.committed = size // linkAll links every repository, the first too
			return nil
		}
		_, got, err := cl.Leases.AcquireFetchLease(ctx, key, cl.Holder, cl.Addr, cl.LeaseTTL)
		if err != nil {
			return fmt.Errorf("wait for the replica storing blob %s: %w", f.key.d, err)
		}
		if got {
			return c.commitSpooled(ctx, f, reg, t, sp, key)
		}
		select {
		case <-time.After(cl.Poll):
		case <-ctx.Done():
			return fmt.Errorf("wait for the replica storing blob %s: %w", f.key.d, ctx.Err())
		}
	}
}

// commitSpooled stores the verified spool under the lease this replica
// holds (checking again: the holder may have stored the blob just before
// it released the lease), renewing it while the store write runs, then
// gives the lease back.
func (c *Cache) commitSpooled(ctx context.Context, f *fetch, reg string, t Target, sp *spool, key string) error {
	defer c.holdFetchLease(ctx, key, nil, "digest", f.key.d).end()
	if size, err := c.blobs.Stat(ctx, f.key.d); err == nil {
		f.committed = size
		return nil
	}
	c.log.Info("the replica this fetch followed did not store the blob; storing this replica's verified copy", "digest", f.key.d)
	w, err := c.content.NewWriter(ctx, f.key.d, sp.n)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, io.NewSectionReader(sp.File, 0, sp.n)); err != nil {
		w.Cancel()
		return fmt.Errorf("store fetched blob: %w", err)
	}
	return c.commit(ctx, f, w, reg, t, sp.n, sp.n)
}

// manifestLease coalesces a manifest fetch across replicas: the fetch of
// ref for reg/repo takes a fetch lease (the table blobs use) before it asks
// the upstream, so a manifest wanted on several replicas at once is one
// upstream GET (Docker Hub counts those as pulls). A replica that finds
// the lease held waits (polling) until the holder stored the manifest,
// which stored returns, or the lease is free. Manifests are small: the
// waiters do not follow the holder's stream. The lease is renewed as a
// blob's is, for as long as the fetch runs (its request to the upstream is
// bounded by the upstream client's timeouts and manifestFetchTimeout): a
// slow upstream or a large index keeps it one GET, and only a holder that
// died lets another replica fetch. When the upstream answered the holder
// 404, the lease says so for notFoundShown and the waiters return
// errNotFoundElsewhere instead of asking the upstream once more each.
// It returns the stored manifest (ok), or a func to call with the
// upstream's answer (nil error: the manifest is stored) once the fetch
// ended.
func (c *Cache) manifestLease(ctx context.Context, reg, repo, ref string, stored func() (metadata.Manifest, bool)) (metadata.Manifest, bool, func(error), error) {
	cl := c.cluster
	if cl == nil {
		return metadata.Manifest{}, false, func(error) {}, nil
	}
	key := manifestLeaseKey(reg, repo, ref)
	for {
		lease, got, err := cl.Leases.AcquireFetchLease(ctx, key, cl.Holder, cl.Addr, cl.LeaseTTL)
		if err != nil {
			return metadata.Manifest{}, false, nil, err
		}
		if got {
			// Stored by the previous holder just before it released the lease.
			if m, ok := stored(); ok {
				c.releaseFetchLease(key, "repo", repo, "ref", ref)
				return m, true, nil, nil
			}
			h := c.holdFetchLease(ctx, key, nil, "repo", repo, "ref", ref)
			return metadata.Manifest{}, false, func(err error) {
				if upstream.IsNotFound(err) {
					h.settle(outcomeNotFound, cl.notFoundShown())
					return
				}
				h.end()
			}, nil
		}
		if lease.Outcome == outcomeNotFound {
			return metadata.Manifest{}, false, nil, errNotFoundElsewhere
		}
		select {
		case <-time.After(cl.Poll):
		case <-ctx.Done():
			return metadata.Manifest{}, false, nil, ctx.Err()
		}
		if m, ok := stored(); ok {
			return m, true, nil, nil
		}
	}
}

// outcomeNotFound is a settled manifest lease's outcome: the upstream
// answered 404.
const outcomeNotFound = "notfound"

// errNotFoundElsewhere: the upstream answered the replica whose manifest
// fetch this one waited for 404.
var errNotFoundElsewhere = errors.New("the upstream answered another replica's fetch 404")

// notFoundShown is how long a manifest lease shows an upstream 404 to the
// other replicas: long enough for every replica that waited (looking every
// Poll) to see it, so the 404 is shared for the coalesced fetch only; a
// fetch starting later asks the upstream again (each replica's negative
// cache aside).
func (cl *Cluster) notFoundShown() time.Duration { return 5 * cl.Poll }

// manifestLeaseKey names the fetch of manifest ref of reg/repo in the
// lease table.
func manifestLeaseKey(reg, repo, ref string) string {
	h := sha256.Sum256([]byte("manifest\x00" + reg + "\x00" + repo + "\x00" + ref))
	return hex.EncodeToString(h[:])
}

// releaseFetchLease gives lease key back, with its own deadline: the
// fetch's context may have ended. A failure only delays the next holder
// until the lease expires.
func (c *Cache) releaseFetchLease(key string, logAttrs ...any) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.cluster.Leases.ReleaseFetchLease(ctx, key, c.cluster.Holder); err != nil {
		c.log.Warn("release fetch lease", append(logAttrs, "err", err)...)
	}
}
