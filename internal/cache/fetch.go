package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"go.opentelemetry.io/otel/trace"

	"github.com/arcacache/arca/internal/blobstore"
)

// A fetch reads the upstream in chunks of at most fetchChunk bytes (at
// least fetchChunkMin unless the stream ends), at most fetchChunks ahead of
// the staged writer. Written chunks holding up to ringBytes of memory stay
// there for followers that keep up (counted by their buffers, not by the
// bytes in them: from a slow upstream a chunk may hold only fetchChunkMin);
// a follower that falls further behind reads the staged file. Memory per
// transfer is constant, plus at most one chunk per follower in the middle
// of writing it to its client, plus a stagedRead buffer per follower that
// fell behind the ring. That buffer is small on purpose: 32 laggards of a
// cold wave each holding a full chunk would add 8 MiB of heap (twice that
// with the GC's headroom), and a read from the staged file is a page-cache
// copy, cheap at any size.
const (
	fetchChunk    = 256 << 10
	fetchChunkMin = 64 << 10
	fetchChunks   = 8
	ringBytes     = 4 << 20
	stagedRead    = 64 << 10
)

// fetch is one in-flight upstream transfer shared by all its readers.
type fetch struct {
	key      fetchKey
	trace    trace.Span // the leader's request span (tracing)
	pool     *bufPool
	started  chan struct{} // closed when bytes can be followed, or on failure to start
	finished chan struct{} // closed when the fetch is committed and linked, or failed

	// Set before started is closed, read-only after.
	staged   blobstore.Staged
	size     int64
	startErr error
	stored   bool // d was stored already when the fetch began: nothing to follow

	// Written by the run goroutine only.
	committed int64 // the committed size, for links

	// Guarded by Cache.mu: repositories to link, and how many are linked.
	links  []repoRef
	linked int

	mu       sync.Mutex
	ring     []*memChunk // received chunks still in memory, in order
	ringSize int64       // memory held by the written chunks in ring
	avail    int64       // bytes received from the upstream
	written  int64       // bytes in the staged file
	verified bool        // all bytes received and their digest matches
	done     bool
	err      error
	// closed and replaced when bytes arrive, on verify and on finish
	// (not when they reach the file: a follower never waits for that,
	// since what left the ring is in the file)
	progress chan struct{}
	refs     int  // readers holding the staged file open
	closed   bool // staged file closed
}

// memChunk is a received chunk. refs counts the writer and the followers
// using b; b goes back to the pool once it is evicted and unused.
type memChunk struct {
	off     int64
	b       []byte
	refs    int
	written bool
	evicted bool
}

func newFetch(key fetchKey) *fetch {
	return &fetch{
		key: key, pool: newBufPool(fetchChunk, 2*fetchChunks+ringBytes/fetchChunk),
		started: make(chan struct{}), finished: make(chan struct{}), progress: make(chan struct{}),
		refs: 1,
	}
}

// addLink must be called with Cache.mu held.
func (f *fetch) addLink(l repoRef) {
	for _, have := range f.links {
		if have == l {
			return
		}
	}
	f.links = append(f.links, l)
}

func (f *fetch) start(staged blobstore.Staged, size int64, err error) {
	f.staged, f.size, f.startErr = staged, size, err
	close(f.started)
}

// notify wakes the waiting followers. It must be called with f.mu held.
func (f *fetch) notify() {
	close(f.progress)
	f.progress = make(chan struct{})
}

// publish makes b, the next received bytes, readable by followers. The
// writer holds a reference until wrote.
func (f *fetch) publish(b []byte) *memChunk {
	f.mu.Lock()
	defer f.mu.Unlock()
	mc := &memChunk{off: f.avail, b: b, refs: 1}
	f.ring = append(f.ring, mc)
	f.avail += int64(len(b))
	f.notify()
	return mc
}

// wrote records that mc reached the staged file, and evicts the oldest
// written chunks beyond ringBytes of memory: followers behind them read
// the file.
func (f *fetch) wrote(mc *memChunk) {
	f.mu.Lock()
	defer f.mu.Unlock()
	mc.written = true
	f.written = mc.off + int64(len(mc.b))
	f.ringSize += int64(cap(mc.b))
	f.unref(mc)
	for len(f.ring) > 1 && f.ring[0].written && f.ringSize-int64(cap(f.ring[0].b)) >= ringBytes {
		f.ringSize -= int64(cap(f.ring[0].b))
		f.evict(f.ring[0])
		f.ring = f.ring[1:]
	}
}

// evict and unref must be called with f.mu held.
func (f *fetch) evict(mc *memChunk) {
	mc.evicted = true
	if mc.refs == 0 {
		f.pool.put(mc.b)
	}
}

func (f *fetch) unref(mc *memChunk) {
	mc.refs--
	if mc.refs == 0 && mc.evicted {
		f.pool.put(mc.b)
	}
}

// chunkAt returns the chunk holding offset off, or nil if it left memory.
// Must be called with f.mu held.
func (f *fetch) chunkAt(off int64) *memChunk {
	for i := len(f.ring) - 1; i >= 0; i-- {
		mc := f.ring[i]
		if off >= mc.off {
			if off < mc.off+int64(len(mc.b)) {
				return mc
			}
			return nil
		}
	}
	return nil
}

// holdBack is how far followers may read: everything once verified;
// before that, all but the last byte of the blob (of what arrived, when
// the upstream announced no size), so a transfer cannot look complete.
// Must be called with f.mu held.
func (f *fetch) holdBack() int64 {
	if f.verified || (f.size >= 0 && f.avail < f.size) {
		return f.avail
	}
	return f.avail - 1
}

// verify releases the held-back last byte to followers.
func (f *fetch) verify() {
	f.mu.Lock()
	f.verified = true
	f.notify()
	f.mu.Unlock()
}

func (f *fetch) finish(err error) {
	f.mu.Lock()
	f.done, f.err = true, err
	for _, mc := range f.ring {
		f.evict(mc)
	}
	f.ring, f.ringSize = nil, 0
	f.closeIfUnused()
	f.notify()
	f.mu.Unlock()
	close(f.finished)
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

// follower reads an in-flight fetch: from the chunks in memory while it
// keeps up, from the staged file when it falls behind them. It holds back
// the final byte until the digest is verified, so a client can never see a
// complete body of content that failed verification. Once verified, the
// bytes are served whatever happens to the commit that follows.
type follower struct {
	f      *fetch
	ctx    context.Context
	off    int64
	buf    []byte   // for reads from the staged file
	file   *os.File // the follower's own descriptor of the staged file (SendFile)
	closed bool
}

// await waits until bytes from r.off up to mark(), called with f.mu held,
// may be read, and returns that mark with f.mu still held. It returns
// io.EOF at the verified end, and an error when the fetch failed before it
// verified.
func (r *follower) await(mark func() int64) (int64, error) {
	f := r.f
	for {
		f.mu.Lock()
		if f.err != nil && !f.verified {
			err := f.err
			f.mu.Unlock()
			return 0, fmt.Errorf("upstream fetch failed: %w", err)
		}
		if limit := mark(); r.off < limit {
			return limit, nil
		}
		if f.verified && r.off >= f.avail {
			f.mu.Unlock()
			return 0, io.EOF
		}
		wait := f.progress
		f.mu.Unlock()
		select {
		case <-wait:
		case <-r.ctx.Done():
			return 0, r.ctx.Err()
		}
	}
}

// next returns up to max of the next bytes and a function to call once
// they are used (they may be the fetch's memory). Every byte below the
// hold-back is in memory or, if it left the ring, in the staged file.
func (r *follower) next(max int) ([]byte, func(), error) {
	f := r.f
	limit, err := r.await(f.holdBack)
	if err != nil {
		return nil, nil, err
	}
	if mc := f.chunkAt(r.off); mc != nil {
		mc.refs++
		start := r.off - mc.off
		end := min(int64(len(mc.b)), limit-mc.off, start+int64(max))
		f.mu.Unlock()
		return mc.b[start:end], func() {
			f.mu.Lock()
			f.unref(mc)
			f.mu.Unlock()
		}, nil
	}
	fileLimit := min(limit, f.written)
	f.mu.Unlock()
	return r.readStaged(min(int64(max), fileLimit-r.off))
}

func (r *follower) readStaged(n int64) ([]byte, func(), error) {
	if r.buf == nil {
		r.buf = make([]byte, stagedRead)
	}
	n = min(n, int64(len(r.buf)))
	m, err := r.f.staged.ReadAt(r.buf[:n], r.off)
	if m > 0 {
		return r.buf[:m], func() {}, nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF // below the written mark: the file must hold it
	}
	return nil, nil, fmt.Errorf("read staged blob: %w", err)
}

func (r *follower) Read(p []byte) (int, error) {
	b, done, err := r.next(len(p))
	if err != nil {
		return 0, err
	}
	n := copy(p, b)
	done()
	r.off += int64(n)
	return n, nil
}

// WriteTo writes the bytes straight from the fetch's memory, without a
// copy into an intermediate buffer.
func (r *follower) WriteTo(w io.Writer) (int64, error) { return r.writeTo(w, nil) }

// SendFile is WriteTo for a plain connection: bytes that left memory (a
// follower that fell behind the ring) go to w.ReadFrom as sections of the
// staged file, which net/http's response sends with sendfile, from the
// page cache to the socket without a copy through user space. A follower
// that keeps up still writes each chunk from memory as soon as it arrives:
// waiting for the staged write before sending (sendfile for every byte)
// put the file write on the client's path and measured slower.
func (r *follower) SendFile(w io.Writer) (int64, error) {
	rf, _ := w.(io.ReaderFrom)
	return r.writeTo(w, rf)
}

func (r *follower) writeTo(w io.Writer, rf io.ReaderFrom) (int64, error) {
	f := r.f
	var total int64
	for {
		limit, err := r.await(f.holdBack)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		var n int64
		if mc := f.chunkAt(r.off); mc != nil {
			mc.refs++
			f.mu.Unlock()
			start := r.off - mc.off
			var m int
			m, err = w.Write(mc.b[start:min(int64(len(mc.b)), limit-mc.off)])
			f.mu.Lock()
			f.unref(mc)
			f.mu.Unlock()
			n = int64(m)
		} else {
			fileLimit := min(limit, f.written)
			f.mu.Unlock()
			n, err = r.copyStaged(w, rf, fileLimit)
		}
		r.off += n
		total += n
		if err != nil {
			return total, err
		}
	}
}

// copyStaged writes the staged bytes from r.off up to end (all below the
// written mark): as a file section to rf when it can have one, else
// through the follower's buffer.
func (r *follower) copyStaged(w io.Writer, rf io.ReaderFrom, end int64) (int64, error) {
	if rf != nil && r.file == nil {
		if file, err := reopen(r.f.staged); err == nil {
			r.file = file
		} else {
			rf = nil
		}
	}
	if rf == nil || r.file == nil {
		b, _, err := r.readStaged(end - r.off)
		if err != nil {
			return 0, err
		}
		n, err := w.Write(b)
		return int64(n), err
	}
	if _, err := r.file.Seek(r.off, io.SeekStart); err != nil {
		return 0, fmt.Errorf("read staged blob: %w", err)
	}
	want := end - r.off
	n, err := rf.ReadFrom(io.LimitReader(r.file, want))
	if err == nil && n < want {
		err = fmt.Errorf("read staged blob: %w", io.ErrUnexpectedEOF) // below the written mark
	}
	return n, err
}

// reopen opens the staged file again as a new open file description, so
// that the follower's reads have their own file offset (sendfile reads
// from it). /proc/self/fd reaches the file even after a rename or unlink
// (a committed blob, a spool).
func reopen(s blobstore.Staged) (*os.File, error) {
	var f *os.File
	switch v := s.(type) {
	case *os.File:
		f = v
	case *spool:
		f = v.File
	default:
		return nil, errors.New("staged bytes are not a file")
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var file *os.File
	cerr := rc.Control(func(fd uintptr) {
		file, err = os.Open("/proc/self/fd/" + strconv.FormatUint(uint64(fd), 10))
	})
	if cerr != nil {
		return nil, cerr
	}
	return file, err
}

func (r *follower) Close() error {
	if !r.closed {
		r.closed = true
		if r.file != nil {
			r.file.Close()
		}
		r.f.release()
	}
	return nil
}

// bufPool recycles chunk buffers. It allocates when empty (a chunk held by
// a slow client must not stall the upstream) and keeps at most max.
type bufPool struct {
	size int
	free chan []byte
}

func newBufPool(size, max int) *bufPool {
	return &bufPool{size: size, free: make(chan []byte, max)}
}

func (p *bufPool) get() []byte {
	select {
	case b := <-p.free:
		return b
	default:
		return make([]byte, p.size)
	}
}

func (p *bufPool) put(b []byte) {
	select {
	case p.free <- b[:cap(b)]:
	default:
	}
}

type chunk struct {
	b   []byte
	err error
}

// readAhead reads r into buffers from pool and sends the filled ones (at
// most n waiting), then a final chunk carrying any error other than EOF,
// then closes the channel. It gives up when stop is closed (the consumer
// left).
func readAhead(r io.Reader, pool *bufPool, n int, stop <-chan struct{}) <-chan chunk {
	out := make(chan chunk, n)
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
			b := pool.get()
			m, err := fill(r, b, fetchChunkMin)
			if m > 0 && !send(chunk{b: b[:m]}) {
				return
			}
			if m == 0 {
				pool.put(b)
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

// fill reads into b until it holds at least min bytes or r fails (io.EOF
// included, passed through as is).
func fill(r io.Reader, b []byte, min int) (int, error) {
	n := 0
	for n < min {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
