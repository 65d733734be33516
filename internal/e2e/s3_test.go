package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/minio"
	"github.com/arcacache/arca/internal/testutil/pgtest"
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

// TestCopyStoreToPostgresAndS3 moves an embedded instance (filesystem
// blobs, SQLite) to PostgreSQL + S3 with copy-store: every blob goes
// through the verifying ingest (a spoiled one stops the copy, naming it),
// a rerun copies nothing again, and a server on PostgreSQL + S3 alone
// (the data directory's blobs and database removed) serves the image.
func TestCopyStoreToPostgresAndS3(t *testing.T) {
	url := pgtest.NewDatabase(t)
	srv := minio.Start(t)
	bucket, err := srv.NewBucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	blobsURL := srv.BlobsURL(bucket, "moved")
	dataDir := t.TempDir()
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dataDir, Args: []string{"--metadata", "", "--blobs", ""}})}
	im := newImage(t, 13, "amd64", 3<<20, 1000)
	a.pushImage(t, "moved/app", "v1", im)
	a.Stop()

	copyStore := func() (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, arcaBin, "copy-store", "--from-data-dir", dataDir, "--to-metadata", url, "--to-blobs", blobsURL)
		cmd.Env = append(os.Environ(), srv.Env()...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	layer := digest.FromBytes(im.Layers[0])
	path := filepath.Join(dataDir, "blobs", "blobs", "sha256", layer.Encoded()[:2], layer.Encoded())
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), good...)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(path, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := copyStore(); err == nil || !strings.Contains(out, layer.String()) || !strings.Contains(out, "digest mismatch") {
		t.Fatalf("copy-store of a spoiled blob: %v\n%s", err, out)
	}
	if err := os.WriteFile(path, good, 0o644); err != nil {
		t.Fatal(err)
	}
	// The image's blobs and its manifest's bytes; the failed run copied
	// some of them already (resumed), the last run none.
	n := len(im.blobs()) + 1
	for i, want := range []string{fmt.Sprintf("copy-store: blobs: %d (", n), fmt.Sprintf(", 0 copied, %d already there", n)} {
		out, err := copyStore()
		if err != nil || !strings.Contains(out, want) || !strings.Contains(out, "copied metadata from sqlite to postgres") {
			t.Fatalf("copy-store run %d: %v\n%s", i+1, err, out)
		}
	}
	for _, p := range []string{filepath.Join(dataDir, "blobs"), filepath.Join(dataDir, "arca.db")} {
		if err := os.RemoveAll(p); err != nil {
			t.Fatal(err)
		}
	}
	b := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DataDir: dataDir, Args: []string{"--metadata", url, "--blobs", blobsURL}, Env: srv.Env()})}
	checkImage(t, b, "moved/app", "v1", im)
}
