package cache

import "testing"

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
