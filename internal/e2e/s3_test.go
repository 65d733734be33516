package e2e

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/minio"
)

// Blobs in S3 (MinIO on loopback): a crane push and pull round trip, blob
// GETs streamed with Range, and with --blob-redirect a 307 to a presigned
// URL that serves the range itself. Nothing lands in the data directory's
// blob store, no probe file is written, and the secret key is never logged.
func TestS3BlobsStreamAndRedirect(t *testing.T) {
	srv := minio.Start(t)
	bucket, err := srv.NewBucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	args := []string{"--blobs", srv.BlobsURL(bucket, "arca")}
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dataDir, Args: args, Env: srv.Env()})}
	c := crane(t)
	im := newImage(t, 7, "amd64", 1<<10, 3<<20)
	ref := a.Ref("s3/img:v1")
	c.crane("push", im.writeLayout(t), ref)
	c.crane("validate", "--remote", ref)
	out := filepath.Join(t.TempDir(), "pulled")
	c.crane("pull", "--format", "oci", ref, out)
	checkLayoutHas(t, out, im)

	layer := im.blobs()[len(im.blobs())-1]
	d := digest.FromBytes(layer)
	url := a.URL() + "/v2/s3/img/blobs/" + d.String()
	r := do(t, "GET", url, map[string]string{"Range": "bytes=1000-1999"}, nil)
	if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, layer[1000:2000]) {
		t.Fatalf("streamed range: %d, %d bytes", r.Status, len(r.Body))
	}
	if entries, _ := os.ReadDir(filepath.Join(dataDir, "blobs", "blobs")); len(entries) != 0 {
		t.Fatalf("blobs written to the data directory: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(dataDir, ".ready-probe")); err == nil {
		t.Fatal("/readyz wrote a probe file")
	}
	a.Proc.Stop()

	// The same bucket, now answering blob GETs with presigned redirects.
	b := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dataDir, Args: append(args, "--blob-redirect", "1m"), Env: srv.Env()})}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(b.URL() + "/v2/s3/img/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(loc, bucket) || !strings.Contains(loc, "X-Amz-Signature=") {
		t.Fatalf("with --blob-redirect: %d Location %q", resp.StatusCode, loc)
	}
	r = do(t, "GET", b.URL()+"/v2/s3/img/blobs/"+d.String(), map[string]string{"Range": "bytes=5-9"}, nil)
	if r.Status != http.StatusPartialContent || !bytes.Equal(r.Body, layer[5:10]) {
		t.Fatalf("redirected range: %d %q", r.Status, r.Body)
	}
	c.crane("validate", "--remote", b.Ref("s3/img:v1"))
	for _, p := range []*arcaproc.Proc{a.Proc, b.Proc} {
		if strings.Contains(p.Logs(), srv.SecretKey) {
			t.Fatal("the secret key is in the log")
		}
	}
}
