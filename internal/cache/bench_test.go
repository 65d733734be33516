package cache_test

import (
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// BenchmarkColdBlob pulls a 64 MiB blob through a fresh cache each
// iteration (the upstream is the real docker-registry on loopback).
func BenchmarkColdBlob(b *testing.B) {
	up := upstreamreg.Start(b, upstreamreg.Options{})
	layer := randomBytes(64 << 20)
	up.Push(b, "img", "v1", layer)
	d := digest.FromBytes(layer)
	buf := make([]byte, 256<<10)
	b.SetBytes(int64(len(layer)))
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := newEnv(b, up.Host, time.Hour, nil)
		b.StartTimer()
		res, err := http.Get(e.srv.URL + "/v2/cached/img/blobs/" + d.String())
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{res.Body}, buf)
		res.Body.Close()
		if n != int64(len(layer)) {
			b.Fatalf("got %d bytes", n)
		}
	}
}
