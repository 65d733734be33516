package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"
)

// The ring is bounded by the memory its chunks hold, not by the bytes in
// them: from a slow upstream every chunk is a full fetchChunk buffer
// holding only fetchChunkMin bytes, and counting bytes kept four times
// ringBytes of buffers alive per transfer.
func TestRingBoundsMemoryNotBytes(t *testing.T) {
	for _, fill := range []int{fetchChunkMin, fetchChunk} {
		f := newFetch(fetchKey{})
		for range 4 * ringBytes / fill {
			b := f.pool.get()
			f.wrote(f.publish(b[:fill]))
		}
		var held int
		for _, mc := range f.ring {
			held += cap(mc.b)
		}
		// Eviction stops while dropping the oldest would go below ringBytes.
		if held < ringBytes || held >= ringBytes+fetchChunk {
			t.Errorf("chunks of %d bytes: ring holds %d bytes of buffers (%d chunks), want [%d, %d)",
				fill, held, len(f.ring), ringBytes, ringBytes+fetchChunk)
		}
		f.finish(nil)
	}
}

// clientRecorder is a client connection as SendFile sees net/http's
// response: it takes bytes through Write and through ReadFrom, and records
// which bytes came as a section of a file of the follower's own (sendfile
// reads from that file's offset, so a descriptor shared by followers would
// mix them up).
type clientRecorder struct {
	shared   *os.File // the fetch's staged reader
	got      bytes.Buffer
	fromFile int      // bytes that came as file sections
	sent     chan int // bytes received after each call
}

func (c *clientRecorder) Write(b []byte) (int, error) {
	n, _ := c.got.Write(b)
	c.sent <- c.got.Len()
	return n, nil
}

func (c *clientRecorder) ReadFrom(r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		return 0, fmt.Errorf("ReadFrom got a %T, not a file section", r)
	}
	if f, ok := lr.R.(*os.File); !ok || f == c.shared {
		return 0, fmt.Errorf("ReadFrom got a section of %T, not the follower's own file", lr.R)
	}
	n, err := c.got.ReadFrom(r)
	c.fromFile += int(n)
	c.sent <- c.got.Len()
	return n, err
}

// A follower that fell behind the chunks in memory gets the written bytes
// as sections of the staged file (sendfile), then the rest from memory as
// it arrives, before it is written; the last byte only once the digest verified,
// and a fetch that fails before that never completes.
func TestSendFileSendsWhatLeftMemoryHoldingBackTheLastByte(t *testing.T) {
	for _, fail := range []bool{false, true} {
		blob := make([]byte, ringBytes+4*fetchChunk)
		for i := range blob {
			blob[i] = byte(i * 7)
		}
		w, err := os.CreateTemp(t.TempDir(), "staged-")
		if err != nil {
			t.Fatal(err)
		}
		staged, err := os.Open(w.Name())
		if err != nil {
			t.Fatal(err)
		}
		f := newFetch(fetchKey{})
		f.start(staged, int64(len(blob)), nil)
		stage := func(b []byte) {
			mc := f.publish(b)
			if _, err := w.Write(b); err != nil {
				t.Fatal(err)
			}
			f.wrote(mc)
		}
		// All but the last chunk received and written before the follower
		// comes: the first ones left memory.
		for off := 0; off < len(blob)-fetchChunk; off += fetchChunk {
			stage(blob[off : off+fetchChunk])
		}
		f.mu.Lock()
		inMemory := f.ring[0].off
		f.mu.Unlock()
		if inMemory == 0 {
			t.Fatal("no chunk left memory: the test does not reach the staged file")
		}
		rec := &clientRecorder{shared: staged, sent: make(chan int, 1000)}
		r := &follower{f: f, ctx: context.Background()}
		type result struct {
			n   int64
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := r.SendFile(rec)
			done <- result{n, err}
		}()
		waitSent := func(want int) {
			t.Helper()
			for {
				select {
				case n := <-rec.sent:
					if n > want {
						t.Fatalf("fail=%v: %d bytes sent, want %d", fail, n, want)
					}
					if n == want {
						return
					}
				case res := <-done:
					t.Fatalf("fail=%v: SendFile returned %d, %v after %d bytes, want %d", fail, res.n, res.err, rec.got.Len(), want)
				case <-time.After(10 * time.Second):
					t.Fatalf("fail=%v: %d bytes sent, want %d", fail, rec.got.Len(), want)
				}
			}
		}
		waitSent(len(blob) - fetchChunk)
		// What left memory came from the file (and maybe more of what was
		// written: a section is sent up to the written mark).
		if rec.fromFile < int(inMemory) {
			t.Fatalf("fail=%v: %d bytes came from the file, want at least the %d that left memory", fail, rec.fromFile, inMemory)
		}
		// Received, not yet written: it goes out from memory, all but the
		// last byte.
		fromFile := rec.fromFile
		last := f.publish(blob[len(blob)-fetchChunk:])
		waitSent(len(blob) - 1)
		if rec.fromFile != fromFile {
			t.Fatalf("fail=%v: bytes not yet written came as a file section", fail)
		}
		if _, err := w.Write(blob[len(blob)-fetchChunk:]); err != nil {
			t.Fatal(err)
		}
		f.wrote(last)
		if fail {
			f.finish(errors.New("digest mismatch"))
		} else {
			f.verify()
			waitSent(len(blob))
			f.finish(nil)
		}
		res := <-done
		r.Close()
		switch {
		case fail && (res.err == nil || rec.got.Len() != len(blob)-1):
			t.Fatalf("failed fetch: SendFile returned %d, %v with %d bytes sent", res.n, res.err, rec.got.Len())
		case !fail && (res.err != nil || res.n != int64(len(blob)) || !bytes.Equal(rec.got.Bytes(), blob)):
			t.Fatalf("SendFile returned %d, %v; body equal: %v", res.n, res.err, bytes.Equal(rec.got.Bytes(), blob))
		}
		w.Close()
	}
}
