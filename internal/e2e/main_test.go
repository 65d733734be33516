package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/toolpath"
)

// arcaBin is the arca binary built once by TestMain.
var arcaBin string

func TestMain(m *testing.M) {
	if path := os.Getenv(plainFileEnv); path != "" {
		servePlainFile(path) // benchmark helper process; never returns
	}
	if up := os.Getenv(floorUpstreamEnv); up != "" {
		servePassThrough(up) // benchmark helper process; never returns
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	bin, cleanup, err := arcaproc.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer cleanup()
	arcaBin = bin
	defer benchTeardown()
	defer s3BenchTeardown()
	return m.Run()
}

// arca is a running arca server process (or, with only Addr set, a
// server started elsewhere).
type arca struct {
	*arcaproc.Proc
}

// startArca starts arca on a free loopback port with a fresh data dir and
// stops it when the test ends.
func startArca(t testing.TB) *arca {
	t.Helper()
	return startArcaAt(t, "", t.TempDir())
}

// startArcaAt starts arca on addr ("": a port the kernel picks, the
// race-free choice) with dataDir (reused across restarts) and waits until
// /readyz answers 200.
func startArcaAt(t testing.TB, addr, dataDir string, extraArgs ...string) *arca {
	t.Helper()
	return &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Addr: addr, DataDir: dataDir, Args: extraArgs})}
}

// Ref returns a reference to repo[:tag|@digest] on this server.
func (a *arca) Ref(repoAndRef string) string { return a.Addr + "/" + repoAndRef }

// freeAddr returns a loopback address with a port nobody listens on, for
// an address that must not answer (a server to start takes "" instead).
func freeAddr(t testing.TB) string { return arcaproc.FreeAddr(t) }

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer = arcaproc.SyncBuffer

// toolPath finds an external client: ARCA_TOOLS_BIN, then the repo's
// .tools/bin, then PATH. A missing tool fails the test: scripts/test.sh
// installs every tool, so absence is a setup error, not a reason to skip.
func toolPath(t testing.TB, name string) string {
	t.Helper()
	if p, ok := toolpath.Find(name); ok {
		return p
	}
	t.Fatalf("%s not found in ARCA_TOOLS_BIN, .tools/bin or PATH: run scripts/test.sh to install %s", name, name)
	return ""
}

// npmTools returns tools/<name> with its npm packages installed: its
// package.json and lockfile pin every version; scripts/test.sh installs
// them with npm ci, and so does this when marker (a file under
// node_modules) is missing.
func npmTools(t *testing.T, name, marker string) string {
	t.Helper()
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "tools", name)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", marker)); err != nil {
		cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("npm ci in tools/%s (needs node and npm): %v\n%s", name, err, out)
		}
	}
	return dir
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
