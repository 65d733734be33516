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

// sectionRecorder is a client connection as SendFile sees net/http's
// response: it takes the bytes only through ReadFrom, and only as a
// section of a file of the follower's own (sendfile reads from that
// file's offset, so a descriptor shared by followers would mix them up).
type sectionRecorder struct {
	shared *os.File // the fetch's staged reader
	got    bytes.Buffer
	sent   chan int // bytes received after each ReadFrom
}

func (s *sectionRecorder) Write([]byte) (int, error) {
	return 0, errors.New("Write called: the bytes did not go to ReadFrom")
}

func (s *sectionRecorder) ReadFrom(r io.Reader) (int64, error) {
	lr, ok := r.(*io.LimitedReader)
	if !ok {
		return 0, fmt.Errorf("ReadFrom got a %T, not a file section", r)
	}
	if f, ok := lr.R.(*os.File); !ok || f == s.shared {
		return 0, fmt.Errorf("ReadFrom got a section of %T, not the follower's own file", lr.R)
	}
	n, err := s.got.ReadFrom(r)
	s.sent <- s.got.Len()
	return n, err
}

// SendFile hands the client sections of the staged file as they are
// written, never bytes only received, and the last byte only once the
// digest verified; a fetch that fails before that never completes.
func TestSendFileSendsWrittenSectionsHoldingBackTheLastByte(t *testing.T) {
	for _, fail := range []bool{false, true} {
		blob := make([]byte, 3*fetchChunkMin)
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
		rec := &sectionRecorder{shared: staged, sent: make(chan int, 100)}
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
		stage := func(b []byte) {
			mc := f.publish(b)
			if _, err := w.Write(b); err != nil {
				t.Fatal(err)
			}
			f.wrote(mc)
		}
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
		stage(blob[:fetchChunkMin])
		waitSent(fetchChunkMin)
		// Received but not in the file yet: nothing more goes out.
		last := f.publish(blob[fetchChunkMin:])
		time.Sleep(50 * time.Millisecond)
		if n := rec.got.Len(); n != fetchChunkMin {
			t.Fatalf("fail=%v: %d bytes sent before they were written", fail, n)
		}
		if _, err := w.Write(blob[fetchChunkMin:]); err != nil {
			t.Fatal(err)
		}
		f.wrote(last)
		waitSent(len(blob) - 1)
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
