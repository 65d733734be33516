// Package arcaproc runs the real arca binary for end-to-end tests: it
// builds it once per test binary, starts `arca serve` on a free loopback
// port, waits for /readyz and stops it when the test ends.
//
// It is a test fixture: helpers that take a testing.TB fail the test on
// error.
package arcaproc

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/freeport"
	"github.com/arcacache/arca/internal/testutil/pgtest"
	"github.com/arcacache/arca/internal/testutil/toolpath"
)

// Build compiles cmd/arca into a fresh temporary directory, for TestMain;
// cleanup removes it (and stops the PostgreSQL cluster of
// ARCA_TEST_METADATA=postgres, if one was started). Under `go test -race` the server is built with the
// race detector too, so real clients hammering it find data races in the
// handlers (Stop reports them).
func Build() (bin string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "arca-bin-")
	if err != nil {
		return "", nil, err
	}
	bin = filepath.Join(dir, "arca")
	args := []string{"build", "-o", bin}
	if Race {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, "github.com/arcacache/arca/cmd/arca")...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("building arca: %w", err)
	}
	return bin, func() { pgtest.Stop(); os.RemoveAll(dir) }, nil
}

// FreeAddr returns a loopback address with a port nobody listens on, for
// an address that must not answer. Nothing reserves it: a server to start
// on a free port takes Options.Addr "" or StartOnFreePort instead.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := freeport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Options configure Start.
type Options struct {
	Bin     string   // the arca binary (from Build)
	Addr    string   // listen address; "" = a port the kernel picks
	DataDir string   // data directory (reused across restarts); "" = t.TempDir()
	Args    []string // more serve flags
	Env     []string // added to the test binary's environment
	// DefaultEgress runs arca with its default egress policy instead of
	// LoopbackOnly (tests of that policy; their rules name loopback
	// upstreams explicitly).
	DefaultEgress bool
	// Closed keeps data-plane access control on. Without it the harness
	// starts arca with --insecure-open (anyone may pull, push and delete),
	// so tests about other things need no credentials; access-control
	// tests set Closed and create the identities they use.
	Closed bool
}

// LoopbackOnly are the serve flags that keep arca's outbound connections
// on this machine.
var LoopbackOnly = []string{"--upstream-allow", "127.0.0.0/8", "--upstream-allow", "::1/128", "--upstream-allow", "localhost"}

// Proc is a running `arca serve`. A Proc with only Addr set names a
// server started elsewhere.
type Proc struct {
	Addr    string // host:port
	DataDir string
	// BlobArgs and BlobEnv are the --blobs flag and the credentials the
	// server got from ARCA_TEST_BLOBS (none for the default filesystem):
	// what an offline command on its data directory needs too.
	BlobArgs, BlobEnv []string
	// HTTPS is set when the server was started with --tls-cert.
	HTTPS bool

	t       testing.TB
	cmd     *exec.Cmd
	out     *SyncBuffer
	done    chan struct{}
	waitErr error
}

// Start starts arca serve, stops it when the test ends and waits until
// /readyz answers 200. With Options.Addr empty arca listens on a port the
// kernel picks (no race for a free port) and Proc.Addr is the one it got.
func Start(t testing.TB, o Options) *Proc {
	t.Helper()
	p, err := start(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// StartOnFreePort starts arca with the options opts returns for a fresh
// loopback address, for servers that must be told an address of theirs
// before they start (say --cluster-advertise or --pprof-addr): when arca
// finds that address taken it starts again with another.
func StartOnFreePort(t testing.TB, opts func(addr string) Options) *Proc {
	t.Helper()
	var p *Proc
	_, err := freeport.Retry(func(addr string) (err error) {
		p, err = start(t, opts(addr))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func start(t testing.TB, o Options) (*Proc, error) {
	t.Helper()
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	// arca writes the address it listens on here once it serves: proof
	// that this process, not one that took the port, answers there.
	addrFile := filepath.Join(t.TempDir(), "addr")
	args := append([]string{"serve", "--addr", o.Addr, "--addr-file", addrFile, "--data-dir", o.DataDir}, o.Args...)
	blobArgs, blobEnv := blobsFlags(t, o)
	args = append(args, blobArgs...)
	if MetadataBackend(t) == "postgres" && !slices.Contains(o.Args, "--metadata") {
		args = append(args, "--metadata", databaseFor(t, o.DataDir))
	}
	if !o.Closed && !slices.Contains(o.Args, "--insecure-open") {
		args = append(args, "--insecure-open")
	}
	if !slices.Contains(o.Args, "--upstream-allow") && !o.DefaultEgress {
		// Tests stay on loopback: names such as docker.io or a Key Vault
		// host in a test's rules are refused, never resolved.
		args = append(args, LoopbackOnly...)
	}
	cmd := exec.Command(o.Bin, args...)
	if o.Env != nil || blobEnv != nil {
		cmd.Env = append(append(os.Environ(), o.Env...), blobEnv...)
	}
	p := &Proc{t: t, Addr: o.Addr, DataDir: o.DataDir, HTTPS: slices.Contains(o.Args, "--tls-cert"), BlobArgs: blobArgs, BlobEnv: blobEnv, cmd: cmd, out: &SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	// Own process group (a kill -9 hits only arca); killed if the test
	// binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start arca: %w", err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.Stop)
	if err := p.waitReady(addrFile); err != nil {
		return nil, err
	}
	return p, nil
}

// MetadataBackend is the metadata store the tests' servers use:
// ARCA_TEST_METADATA=postgres runs them on PostgreSQL (a private cluster
// per test binary, a database per data directory), unset on SQLite.
func MetadataBackend(t testing.TB) string {
	switch v := os.Getenv("ARCA_TEST_METADATA"); v {
	case "", "sqlite":
		return "sqlite"
	case "postgres":
		return v
	default:
		t.Fatalf("ARCA_TEST_METADATA=%q: want postgres or sqlite", v)
		return ""
	}
}

// SkipUnlessSQLite skips a test of what only the embedded store does.
func SkipUnlessSQLite(t testing.TB, what string) {
	t.Helper()
	if b := MetadataBackend(t); b != "sqlite" {
		t.Skipf("%s is SQLite-specific; metadata is %s (ARCA_TEST_METADATA)", what, b)
	}
}

var (
	databasesMu sync.Mutex
	databases   = map[string]string{} // data dir -> database URL
)

// databaseFor returns the database of the server on dataDir: restarts on
// the same data directory find their metadata again.
func databaseFor(t testing.TB, dataDir string) string {
	databasesMu.Lock()
	defer databasesMu.Unlock()
	if url, ok := databases[dataDir]; ok {
		return url
	}
	url := pgtest.NewDatabase(t)
	databases[dataDir] = url
	t.Cleanup(func() {
		databasesMu.Lock()
		delete(databases, dataDir)
		databasesMu.Unlock()
	})
	return url
}

// readyTimeout bounds a start: migrations and opening the stores on a
// loaded machine, not a port race (that fails at once).
const readyTimeout = 30 * time.Second

// waitReady waits for arca to report its address in addrFile, then for
// /readyz to answer 200. An exit because the address was taken wraps
// freeport.ErrInUse.
func (p *Proc) waitReady(addrFile string) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		b, err := os.ReadFile(addrFile)
		if err == nil {
			p.Addr = strings.TrimSpace(string(b))
			break
		}
		select {
		case <-p.done:
			if out := p.out.String(); freeport.InUse(out) {
				return fmt.Errorf("arca on %s: %w; output:\n%s", p.Addr, freeport.ErrInUse, out)
			}
			return fmt.Errorf("arca exited before ready (%v); output:\n%s", p.waitErr, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("arca did not report its address (--addr-file) within %s; output:\n%s", readyTimeout, p.out.String())
		}
	}
	switch err := WaitReady(p.URL()+"/readyz", readyTimeout, p.done); {
	case errors.Is(err, ErrExited):
		return fmt.Errorf("arca exited before ready (%v); output:\n%s", p.waitErr, p.out.String())
	case err != nil:
		return fmt.Errorf("arca not ready on %s within %s; output:\n%s", p.Addr, readyTimeout, p.out.String())
	}
	return nil
}

// ErrExited is WaitReady's error when the process exited first.
var ErrExited = freeport.ErrExited

// WaitReady polls url until it answers with one of statuses (default 200
// OK), exited (the server process's end; may be nil) is closed, or timeout
// passes.
func WaitReady(url string, timeout time.Duration, exited <-chan struct{}, statuses ...int) error {
	if len(statuses) == 0 {
		statuses = []int{http.StatusOK}
	}
	// Readiness only: the test's own clients check the certificate.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			return ErrExited
		default:
		}
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if slices.Contains(statuses, resp.StatusCode) {
				return nil
			}
		}
	}
	return fmt.Errorf("%s not ready after %s", url, timeout)
}

// RepoRoot is the directory holding go.mod, found from the working
// directory up.
func RepoRoot() (string, error) { return toolpath.RepoRoot() }

// URL returns the base URL, e.g. http://127.0.0.1:5000.
func (p *Proc) URL() string {
	if p.HTTPS {
		return "https://" + p.Addr
	}
	return "http://" + p.Addr
}

// Pid is the server's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the server.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Stop sends SIGTERM, waits up to 20s, then kills. It fails the test if
// the server printed a data race. Safe to call more than once.
func (p *Proc) Stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.t.Errorf("arca did not stop within 20s of SIGTERM; killing")
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.checkRaces()
}

// Kill9 kills the server with SIGKILL and waits for it to be gone.
func (p *Proc) Kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.checkRaces()
}

// Wait blocks until the process exits and returns its exit error.
func (p *Proc) Wait(timeout time.Duration) (error, bool) {
	select {
	case <-p.done:
		return p.waitErr, true
	case <-time.After(timeout):
		return nil, false
	}
}

func (p *Proc) checkRaces() {
	if out := p.out.String(); strings.Contains(out, "WARNING: DATA RACE") {
		p.t.Errorf("arca reported a data race:\n%s", out)
	}
}

// Logs returns what the server wrote so far (stdout and stderr).
func (p *Proc) Logs() string { return p.out.String() }

// SyncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
