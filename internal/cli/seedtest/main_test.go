package seedtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
)

// arcaBin is built once by TestMain.
var arcaBin string

func TestMain(m *testing.M) {
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	bin, cleanup, err := arcaproc.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "seedtest:", err)
		return 1
	}
	defer cleanup()
	arcaBin = bin
	return m.Run()
}

const adminToken = "seedtest-admin-token-0b1c"

// server is a running `arca serve`.
type server struct {
	*arcaproc.Proc
}

// startServer runs arca serve on a free loopback port with a fresh data
// directory, the admin token in ARCA_ADMIN_TOKEN, extra environment and
// extra serve flags.
func startServer(t *testing.T, extraEnv []string, extraArgs ...string) *server {
	t.Helper()
	return &server{arcaproc.Start(t, arcaproc.Options{
		Bin:  arcaBin,
		Args: append([]string{"--registry-name", "myregistry"}, extraArgs...),
		Env:  append([]string{"ARCA_ADMIN_TOKEN=" + adminToken}, extraEnv...),
	})}
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
	cmd.Env = append(os.Environ(), "ARCA_ENDPOINT="+s.URL(), "ARCA_TOKEN="+adminToken,
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
