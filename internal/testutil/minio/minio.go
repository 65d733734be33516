// Package minio starts a MinIO server on a free loopback port in a temp
// directory, for tests of the S3 blob backend. The binary is looked up in
// $ARCA_TOOLS_BIN, the repository's .tools/bin, then PATH (scripts/test.sh
// builds it into .tools/bin once). Without it tests skip, saying how to get
// it, unless ARCA_REQUIRE_TOOLS is set (scripts/test.sh sets it), when they
// fail.
package minio

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	minio "github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/arcacache/arca/internal/testutil/freeport"
	"github.com/arcacache/arca/internal/testutil/toolpath"
)

// Install is how to get the binary.
const Install = "GOBIN=$PWD/.tools/bin go install github.com/minio/minio@" + Version

// Version is the MinIO module version scripts/test.sh installs.
const Version = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Server is a running MinIO.
type Server struct {
	Addr      string // host:port
	AccessKey string
	SecretKey string
	cmd       *exec.Cmd
	dir       string
	stderr    *bytes.Buffer
	client    *minio.Client
	waitDone  chan struct{} // closed when the process has exited
	stopOnce  sync.Once
}

// Binary returns the minio binary, or "" if there is none.
func Binary() string {
	p, _ := toolpath.Find("minio")
	return p
}

// Start starts a MinIO for t and stops it when t ends; it skips t (fails
// it under ARCA_REQUIRE_TOOLS) if there is no binary.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		msg := "minio: no minio binary (ARCA_TOOLS_BIN, .tools/bin, PATH): install it with `" + Install + "`"
		if os.Getenv("ARCA_REQUIRE_TOOLS") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir, err := os.MkdirTemp("", "arca-minio-")
	if err != nil {
		t.Fatal(err)
	}
	s, err := StartIn(bin, dir)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop()
		os.RemoveAll(dir)
	})
	return s
}

// StartIn starts bin serving dir (for a server shared by a test binary,
// started without a testing.TB). The caller stops it.
func StartIn(bin, dir string) (*Server, error) {
	// MinIO cannot listen on port 0: a port taken before it binds makes
	// it exit, and it starts again on fresh ones.
	var s *Server
	_, err := freeport.Retry(func(addr string) error {
		console, err := freeport.Addr()
		if err != nil {
			return err
		}
		s = &Server{Addr: addr, AccessKey: "arcatest", SecretKey: randomSecret(), dir: dir, stderr: &bytes.Buffer{}}
		s.cmd = exec.Command(bin, "server", "--quiet", "--address", addr, "--console-address", console, filepath.Join(dir, "data"))
		s.cmd.Env = append(os.Environ(), "MINIO_ROOT_USER="+s.AccessKey, "MINIO_ROOT_PASSWORD="+s.SecretKey,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off", "HOME="+dir)
		s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
		// Killed if the test binary dies without stopping it (a server
		// shared by a test binary is never stopped otherwise).
		s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := s.cmd.Start(); err != nil {
			return fmt.Errorf("minio: start: %w", err)
		}
		if err := s.waitReady(30 * time.Second); err != nil {
			s.Stop()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c, err := minio.New(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""), BucketLookup: minio.BucketLookupPath})
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.client = c
	return s, nil
}

func (s *Server) waitReady(timeout time.Duration) error {
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = s.cmd.Wait(); close(done) }()
	s.waitDone = done
	// First that it is this MinIO that listens on Addr: another process
	// that took the port could answer the health check as well.
	err := freeport.WaitListening(s.cmd.Process.Pid, s.Addr, timeout, done)
	c := &http.Client{Timeout: 5 * time.Second}
	for deadline := time.Now().Add(timeout); err == nil; time.Sleep(100 * time.Millisecond) {
		resp, herr := c.Get("http://" + s.Addr + "/minio/health/ready")
		if herr == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-done:
			err = freeport.ErrExited
		default:
			if time.Now().After(deadline) {
				return fmt.Errorf("minio not ready after %s\n%s", timeout, s.stderr.String())
			}
		}
	}
	switch {
	case errors.Is(err, freeport.ErrInUse), errors.Is(err, freeport.ErrExited) && freeport.InUse(s.stderr.String()):
		return fmt.Errorf("minio on %s: %w", s.Addr, freeport.ErrInUse)
	case errors.Is(err, freeport.ErrExited):
		return fmt.Errorf("minio exited: %v\n%s", waitErr, s.stderr.String())
	}
	return fmt.Errorf("minio: %w\n%s", err, s.stderr.String())
}

// Stop ends the server.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd == nil || s.cmd.Process == nil {
			return
		}
		_ = s.cmd.Process.Kill()
		if s.waitDone != nil {
			<-s.waitDone
		}
	})
}

// Pid is the server's process id (0 when it is not running).
func (s *Server) Pid() int {
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Endpoint is the server's URL.
func (s *Server) Endpoint() string { return "http://" + s.Addr }

// Env is the AWS environment that lets a client in.
func (s *Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s.SecretKey}
}

// NewBucket creates a fresh bucket and returns its name.
func (s *Server) NewBucket(ctx context.Context) (string, error) {
	name := "arca-" + strings.ToLower(randomSecret()[:12])
	if err := s.client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		return "", fmt.Errorf("minio: make bucket: %w", err)
	}
	return name, nil
}

// BlobsURL is the --blobs URL of bucket/prefix on this server.
func (s *Server) BlobsURL(bucket, prefix string) string {
	return "s3://" + bucket + "/" + prefix + "?endpoint=" + s.Endpoint() + "&region=us-east-1&path-style=true"
}

func randomSecret() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
