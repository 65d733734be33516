package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/arcacache/arca/internal/testutil/minio"
)

// Warm 256 MiB blob GETs by one client, blobs on the filesystem vs in S3
// (one loopback MinIO): arca streaming from S3, arca redirecting to a
// presigned URL (the client then reads MinIO), and distribution v3 with
// its S3 driver on the same MinIO (its redirect off: streamed) as the
// peer. All in one run: compare the ratios, not the absolute figures.
func BenchmarkS3BlobDownload(b *testing.B) {
	e := getS3Bench(b)
	p := "/v2/" + benchRepo + "/blobs/" + e.digest
	for _, tg := range []struct {
		name, addr string
		follow     bool
	}{
		{"arca-fs", e.fs.addr, false},
		{"arca-s3", e.s3.addr, false},
		{"arca-s3-redirect", e.redirect.addr, true},
		{"distribution3-s3", e.dist3.addr, false},
	} {
		b.Run(tg.name, func(b *testing.B) {
			get := func(sink io.Writer) error {
				if tg.follow { // the lean client does not follow redirects
					resp, err := http.Get("http://" + tg.addr + p)
					if err != nil {
						return err
					}
					defer resp.Body.Close()
					n, err := io.Copy(sink, resp.Body)
					if err == nil && (resp.StatusCode != 200 || n != benchBlobSize) {
						err = fmt.Errorf("status %d, %d bytes", resp.StatusCode, n)
					}
					return err
				}
				c := newLeanClient(tg.addr)
				defer c.Close()
				st, n, err := c.get(p, "", sink)
				if err == nil && (st != 200 || n != benchBlobSize) {
					err = fmt.Errorf("status %d, %d bytes", st, n)
				}
				return err
			}
			h := sha256.New()
			if err := get(h); err != nil || "sha256:"+hex.EncodeToString(h.Sum(nil)) != e.digest {
				b.Fatalf("warm-up download from %s: %v", tg.name, err)
			}
			b.SetBytes(benchBlobSize)
			for b.Loop() {
				if err := get(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

type s3Bench struct {
	dir                     string
	digest                  string
	minio                   *minio.Server
	fs, s3, redirect, dist3 *proc
}

var (
	s3BenchOnce sync.Once
	s3BenchErr  error
	theS3Bench  *s3Bench
)

func getS3Bench(b *testing.B) *s3Bench {
	b.Helper()
	s3BenchOnce.Do(func() { theS3Bench, s3BenchErr = newS3Bench() })
	if s3BenchErr != nil {
		b.Fatal(s3BenchErr)
	}
	return theS3Bench
}

func s3BenchTeardown() {
	e := theS3Bench
	if e == nil {
		return
	}
	for _, p := range []*proc{e.fs, e.s3, e.redirect, e.dist3} {
		if p != nil {
			p.stop()
		}
	}
	if e.minio != nil {
		e.minio.Stop()
	}
	os.RemoveAll(e.dir)
}

func newS3Bench() (*s3Bench, error) {
	bin := minio.Binary()
	if bin == "" {
		return nil, fmt.Errorf("no minio binary: %s", minio.Install)
	}
	dir, err := os.MkdirTemp("", "arca-s3bench-")
	if err != nil {
		return nil, err
	}
	e := &s3Bench{dir: dir}
	blob := filepath.Join(dir, "blob")
	if e.digest, err = writeRandomFile(blob, benchBlobSize, [32]byte{4, 5, 6}); err != nil {
		return e, err
	}
	if e.minio, err = minio.StartIn(bin, filepath.Join(dir, "minio")); err != nil {
		return e, err
	}
	ctx := context.Background()
	bucket, err := e.minio.NewBucket(ctx)
	if err != nil {
		return e, err
	}
	s3URL := e.minio.BlobsURL(bucket, "arca")
	start := func(name string, args ...string) (*proc, error) {
		data := filepath.Join(dir, name)
		return startProc(name, "/readyz", func(addr string) (*exec.Cmd, error) {
			cmd := exec.Command(arcaBin, append([]string{"serve", "--addr", addr, "--data-dir", data, "--log-level", "warn", "--insecure-open"}, args...)...)
			cmd.Env = append(os.Environ(), e.minio.Env()...)
			cmd.Stderr = benchLog(data + ".log")
			return cmd, nil
		})
	}
	if e.fs, err = start("arca-fs", "--blobs", ""); err != nil {
		return e, err
	}
	if e.s3, err = start("arca-s3", "--blobs", s3URL); err != nil {
		return e, err
	}
	for _, p := range []*proc{e.fs, e.s3} {
		if err := pushBlobFile(p.addr, benchRepo, blob, e.digest); err != nil {
			return e, fmt.Errorf("%s: %w", p.name, err)
		}
	}
	// Its own data directory (metadata), the same bucket: the push finds
	// the blob there already.
	if e.redirect, err = start("arca-s3-redirect", "--blobs", s3URL, "--blob-redirect", "5m"); err != nil {
		return e, err
	}
	if err := pushBlobFile(e.redirect.addr, benchRepo, blob, e.digest); err != nil {
		return e, fmt.Errorf("arca-s3-redirect: %w", err)
	}
	if e.dist3, err = startDistributionS3(e, bucket); err != nil {
		return e, err
	}
	if err := pushBlobFile(e.dist3.addr, benchRepo, blob, e.digest); err != nil {
		return e, fmt.Errorf("distribution3-s3: %w", err)
	}
	return e, nil
}

// startDistributionS3 runs distribution v3 with its S3 driver on the
// bench's MinIO (another prefix of the same bucket), redirects off.
func startDistributionS3(e *s3Bench, bucket string) (*proc, error) {
	bin, err := exec.LookPath("registry")
	if err != nil {
		return nil, fmt.Errorf("distribution v3 not installed: run scripts/test.sh --tools-only")
	}
	return startProc("distribution3-s3", "/v2/", func(addr string) (*exec.Cmd, error) {
		cfg := filepath.Join(e.dir, "distribution3-s3.yml")
		yml := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
%shttp:
  addr: %s
`, s3Storage(e.minio, bucket), addr)
		if err := os.WriteFile(cfg, []byte(yml), 0o600); err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "serve", cfg)
		cmd.Stderr = benchLog(filepath.Join(e.dir, "distribution3-s3.log"))
		return cmd, nil
	})
}
