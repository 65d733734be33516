package arcaproc

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/arcacache/arca/internal/testutil/minio"
)

// With ARCA_TEST_BLOBS=s3, every server Start starts keeps its blobs in
// S3: one MinIO per test binary, one bucket per data directory (kept in
// the data directory, so a restart finds its blobs again).
var shared struct {
	once sync.Once
	srv  *minio.Server
	err  error
}

const (
	bucketFile   = ".test-s3-bucket"
	sharedPrefix = "arca-minio-shared-"
)

// removeStaleShared removes the MinIO directories of test binaries that
// are gone (the shared server dies with its test binary, its directory
// stays behind).
func removeStaleShared() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), sharedPrefix+"*"))
	for _, d := range dirs {
		pid, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(d), sharedPrefix))
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = os.RemoveAll(d)
	}
}

// blobsFlags returns the serve flags and environment for the blob backend
// ARCA_TEST_BLOBS selects ("" or "fs": the default filesystem).
func blobsFlags(t testing.TB, o Options) (args, env []string) {
	t.Helper()
	kind := os.Getenv("ARCA_TEST_BLOBS")
	if kind == "" || kind == "fs" || slices.Contains(o.Args, "--blobs") {
		return nil, nil
	}
	if kind != "s3" {
		t.Fatalf("ARCA_TEST_BLOBS=%q: want fs or s3", kind)
	}
	shared.once.Do(func() {
		bin := minio.Binary()
		if bin == "" {
			shared.err = os.ErrNotExist
			return
		}
		removeStaleShared()
		dir := filepath.Join(os.TempDir(), sharedPrefix+strconv.Itoa(os.Getpid()))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			shared.err = err
			return
		}
		shared.srv, shared.err = minio.StartIn(bin, dir)
	})
	if shared.err != nil {
		t.Fatalf("ARCA_TEST_BLOBS=s3: start MinIO: %v (install it with `%s`)", shared.err, minio.Install)
	}
	if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(o.DataDir, bucketFile)
	bucket, err := os.ReadFile(path)
	if err != nil {
		name, err := shared.srv.NewBucket(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
		bucket = []byte(name)
	}
	return []string{"--blobs", shared.srv.BlobsURL(string(bucket), "arca")}, shared.srv.Env()
}
