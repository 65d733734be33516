package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// TestGracefulShutdown sends SIGTERM while a large blob download is in
// flight: the download must complete in full, then the server exits 0.
func TestGracefulShutdown(t *testing.T) {
	a := startArca(t)
	blob := randomBytes(90, 96<<20)
	a.pushBlob(t, "big/blob", blob)

	resp, err := http.Get(a.URL() + "/v2/big/blob/blobs/" + sha(blob))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Length") != strconv.Itoa(len(blob)) {
		t.Fatalf("GET blob: %s, Content-Length %s", resp.Status, resp.Header.Get("Content-Length"))
	}
	h := sha256.New()
	n, err := io.CopyN(h, resp.Body, 1<<20)
	if err != nil {
		t.Fatalf("first MiB: %v", err)
	}
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Read the rest slowly, so the transfer is still going well after the
	// signal (loopback socket buffers hold only a few MiB).
	buf := make([]byte, 256<<10)
	for {
		m, err := resp.Body.Read(buf)
		h.Write(buf[:m])
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("download broken after SIGTERM at %d of %d bytes: %v", n, len(blob), err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); n != int64(len(blob)) || got != sha(blob) {
		t.Fatalf("download after SIGTERM: %d bytes, digest %s; want %d bytes, %s", n, got, len(blob), sha(blob))
	}
	werr, exited := a.Wait(15 * time.Second)
	if !exited {
		t.Fatalf("arca still running 15s after SIGTERM and the last download ended")
	}
	if werr != nil {
		t.Errorf("arca exit after SIGTERM: %v\n%s", werr, a.Logs())
	}
}
