package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
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

// arcaBin is the arca binary built once by TestMain.
var arcaBin string

func TestMain(m *testing.M) {
	if path := os.Getenv(plainFileEnv); path != "" {
		servePlainFile(path) // benchmark helper process; never returns
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	dir, err := os.MkdirTemp("", "arca-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	arcaBin = filepath.Join(dir, "arca")
	args := []string{"build", "-o", arcaBin}
	// Under `go test -race` the server is built with the race detector too,
	// so real clients hammering it find data races in the handlers.
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/arcacache/arca/cmd/arca")
	cmd := exec.Command("go", args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building arca:", err)
		return 1
	}
	defer benchTeardown()
	return m.Run()
}

// arca is a running arca server process.
type arca struct {
	t       testing.TB
	Addr    string // host:port
	DataDir string
	cmd     *exec.Cmd
	stderr  *syncBuffer
	done    chan struct{}
	waitErr error
}

// startArca starts arca on a free loopback port with a fresh data dir and
// stops it when the test ends.
func startArca(t testing.TB) *arca {
	t.Helper()
	return startArcaAt(t, freeAddr(t), t.TempDir())
}

// startArcaAt starts arca on addr with dataDir (reused across restarts)
// and waits until /readyz answers 200.
func startArcaAt(t testing.TB, addr, dataDir string, extraArgs ...string) *arca {
	t.Helper()
	args := append([]string{"serve", "--addr", addr, "--data-dir", dataDir}, extraArgs...)
	cmd := exec.Command(arcaBin, args...)
	a := &arca{t: t, Addr: addr, DataDir: dataDir, cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = a.stderr
	cmd.Stderr = a.stderr
	// Plain process, own process group: a kill -9 hits only arca.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start arca: %v", err)
	}
	go func() {
		a.waitErr = cmd.Wait()
		close(a.done)
	}()
	t.Cleanup(a.Stop)
	a.waitReady()
	return a
}

func (a *arca) waitReady() {
	a.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-a.done:
			a.t.Fatalf("arca exited before ready (%v); output:\n%s", a.waitErr, a.stderr.String())
		default:
		}
		resp, err := http.Get("http://" + a.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.t.Fatalf("arca not ready on %s after 30s; output:\n%s", a.Addr, a.stderr.String())
}

// URL returns the base URL, e.g. http://127.0.0.1:5000.
func (a *arca) URL() string { return "http://" + a.Addr }

// Ref returns a reference to repo[:tag|@digest] on this server.
func (a *arca) Ref(repoAndRef string) string { return a.Addr + "/" + repoAndRef }

// Stop sends SIGTERM, waits up to 20s, then kills. It fails the test if
// the server printed a data race. Safe to call more than once.
func (a *arca) Stop() {
	select {
	case <-a.done:
	default:
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(20 * time.Second):
			a.t.Errorf("arca did not stop within 20s of SIGTERM; killing")
			_ = a.cmd.Process.Kill()
			<-a.done
		}
	}
	a.checkRaces()
}

// Kill9 kills the server with SIGKILL and waits for it to be gone.
func (a *arca) Kill9() {
	_ = a.cmd.Process.Signal(syscall.SIGKILL)
	<-a.done
	a.checkRaces()
}

// Wait blocks until the process exits and returns its exit error.
func (a *arca) Wait(timeout time.Duration) (error, bool) {
	select {
	case <-a.done:
		return a.waitErr, true
	case <-time.After(timeout):
		return nil, false
	}
}

func (a *arca) checkRaces() {
	if out := a.stderr.String(); strings.Contains(out, "WARNING: DATA RACE") {
		a.t.Errorf("arca reported a data race:\n%s", out)
	}
}

// Logs returns what the server wrote so far.
func (a *arca) Logs() string { return a.stderr.String() }

// freeAddr returns a loopback address with a port nobody listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
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

// toolPath finds an external client: ARCA_TOOLS_BIN, then the repo's
// .tools/bin, then PATH. A missing tool fails the test: scripts/test.sh
// installs every tool, so absence is a setup error, not a reason to skip.
func toolPath(t testing.TB, name string) string {
	t.Helper()
	var dirs []string
	if d := os.Getenv("ARCA_TOOLS_BIN"); d != "" {
		dirs = append(dirs, d)
	}
	if root, err := repoRoot(); err == nil {
		dirs = append(dirs, filepath.Join(root, ".tools", "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s not found in ARCA_TOOLS_BIN, .tools/bin or PATH: run scripts/test.sh to install %s", name, name)
	return ""
}

// repoRoot is the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found")
		}
		dir = parent
	}
}

// tool runs external commands with a private HOME so client config and
// auth files never touch the user's.
type tool struct {
	t    testing.TB
	path string
	env  []string
	dir  string // working directory; "" = the test's
}

func newTool(t testing.TB, name string) *tool {
	t.Helper()
	home := t.TempDir()
	env := append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"DOCKER_CONFIG="+filepath.Join(home, ".docker"), "REGCTL_CONFIG="+filepath.Join(home, "regctl.json"),
		"NO_COLOR=1")
	return &tool{t: t, path: toolPath(t, name), env: env}
}

// run executes the tool and fails the test on a non-zero exit.
func (c *tool) run(args ...string) string {
	c.t.Helper()
	out, err := c.try(args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", filepath.Base(c.path), strings.Join(args, " "), err, out)
	}
	return out
}

// try executes the tool and returns stdout (stderr appended on failure).
func (c *tool) try(args ...string) (string, error) {
	return c.tryCtx(context.Background(), args...)
}

func (c *tool) tryCtx(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.path, args...)
	cmd.Env = c.env
	cmd.Dir = c.dir
	cmd.Stdin = nil
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// lines splits command output into trimmed non-empty lines.
func lines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// drain reads and discards r, for response bodies.
func drain(r io.Reader) { _, _ = io.Copy(io.Discard, r) }
