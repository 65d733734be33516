//go:build !race

package arcaproc

// Race reports whether this test binary runs under the race detector.
const Race = false
