package seedtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// arcaBin is built once by TestMain.
var arcaBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "arca-seedtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "seedtest:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	arcaBin = filepath.Join(dir, "arca")
	args := []string{"build", "-o", arcaBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/arcacache/arca/cmd/arca")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "seedtest: building arca:", err)
		return 1
	}
	return m.Run()
}

const adminToken = "seedtest-admin-token-0b1c"

// server is a running `arca serve`.
type server struct {
	URL     string
	DataDir string
	logs    *syncBuffer
	cmd     *exec.Cmd
	done    chan struct{}
}

// startServer runs arca serve on a free loopback port with a fresh data
// directory, the admin token in ARCA_ADMIN_TOKEN, extra environment and
// extra serve flags.
func startServer(t *testing.T, extraEnv []string, extraArgs ...string) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	s := &server{URL: "http://" + addr, DataDir: t.TempDir(), logs: &syncBuffer{}, done: make(chan struct{})}
	args := append([]string{"serve", "--addr", addr, "--data-dir", s.DataDir, "--registry-name", "myregistry"}, extraArgs...)
	s.cmd = exec.Command(arcaBin, args...)
	s.cmd.Env = append(append(os.Environ(), "ARCA_ADMIN_TOKEN="+adminToken), extraEnv...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(s.stop)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-s.done:
			t.Fatalf("arca serve exited early:\n%s", s.logs.String())
		default:
		}
		if resp, err := http.Get(s.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
	}
	t.Fatalf("arca serve not ready:\n%s", s.logs.String())
	return nil
}

func (s *server) stop() {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// result is one run of the arca CLI binary.
type result struct {
	stdout, stderr string
	code           int
}

// runArca runs the CLI binary against s with a private config directory.
func (s *server) runArca(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, arcaBin, args...)
	cmd.Env = append(os.Environ(), "ARCA_ENDPOINT="+s.URL, "ARCA_TOKEN="+adminToken,
		"ARCA_CONFIG_DIR="+t.TempDir(), "HOME="+t.TempDir())
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running arca %v: %v", args, err)
	}
	return r
}

// mustArca runs a setup command that has to succeed.
func (s *server) mustArca(t *testing.T, args ...string) result {
	t.Helper()
	r := s.runArca(t, "", args...)
	if r.code != 0 {
		t.Fatalf("arca %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
