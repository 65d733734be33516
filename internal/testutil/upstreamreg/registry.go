// Package upstreamreg starts a real upstream registry for tests: Debian's
// docker-registry (CNCF distribution 2.8) on a loopback port, optionally
// behind htpasswd basic auth or behind a Docker-token-protocol token service
// like Docker Hub's auth.docker.io. It also seeds content over the plain
// distribution HTTP API and offers a fault-injecting reverse proxy.
//
// It is a test fixture: every helper takes a testing.TB and fails the test on
// error. Processes and temp files are cleaned up with t.Cleanup.
package upstreamreg

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/freeport"
	"github.com/arcacache/arca/internal/testutil/toolpath"
)

// Auth selects how the registry authenticates clients.
type Auth int

const (
	// None: anonymous read and write.
	None Auth = iota
	// Htpasswd: HTTP basic auth against a bcrypt htpasswd file.
	Htpasswd
	// Token: bearer tokens from the fixture's token service (Docker token
	// protocol); the registry verifies their x5c-signed JWTs.
	Token
)

func (a Auth) String() string {
	switch a {
	case None:
		return "none"
	case Htpasswd:
		return "htpasswd"
	case Token:
		return "token"
	}
	return fmt.Sprintf("Auth(%d)", int(a))
}

// DefaultBinary is where Debian's docker-registry package installs the server.
const DefaultBinary = "/usr/bin/docker-registry"

// Options configures Start.
type Options struct {
	Auth Auth
	// Username and Password are the one account. Htpasswd defaults them to
	// "arca"/"arca-secret". With Token, an empty Username means every token
	// request (anonymous or not) is granted what it asks for, as for public
	// Docker Hub repositories; with a Username, only that account gets access
	// and anonymous tokens carry no access.
	Username, Password string
	// TokenTTL is the lifetime of issued tokens (default 300s, Docker Hub's).
	TokenTTL time.Duration
	// Binary overrides the docker-registry path (default $ARCA_DOCKER_REGISTRY,
	// else /usr/bin/docker-registry).
	Binary string
}

// Registry is a running docker-registry.
type Registry struct {
	// Host is "127.0.0.1:port".
	Host string
	// Username and Password are the account (empty for None, and for Token
	// without an account).
	Username, Password string

	opts    Options
	binary  string
	dir     string
	config  string
	token   *tokenService
	client  *http.Client
	log     *accessLog
	stderr  *ringBuffer
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	stopped bool
}

// Start starts a registry and stops it when the test ends. It fails the test
// (does not skip) when docker-registry is not installed.
func Start(t testing.TB, o Options) *Registry {
	t.Helper()
	bin := findBinary(t, o.Binary)
	if o.Auth == Htpasswd && o.Username == "" {
		o.Username, o.Password = "arca", "arca-secret"
	}
	if o.TokenTTL <= 0 {
		o.TokenTTL = 300 * time.Second
	}
	r := &Registry{
		Username: o.Username, Password: o.Password,
		opts: o, binary: bin, dir: t.TempDir(),
		client: &http.Client{Timeout: 60 * time.Second},
		log:    &accessLog{}, stderr: &ringBuffer{max: 200},
	}
	if o.Auth == Token {
		r.token = startTokenService(t, o)
	}
	// docker-registry cannot listen on port 0: a port taken between the
	// probe and its bind makes it exit, and it starts again on another.
	if _, err := freeport.Retry(r.startOnce); err != nil {
		t.Fatalf("upstreamreg: start docker-registry: %v\nstderr:\n%s", err, r.stderr.String())
	}
	t.Cleanup(r.Stop)
	return r
}

// V3Binary finds a CNCF distribution v3 "registry" binary (which, unlike
// 2.8, paginates tags/list) for Options.Binary: $ARCA_DISTRIBUTION_V3, else
// "registry" in $ARCA_TOOLS_BIN, the repository's .tools/bin or PATH, if its
// --version says v3. It fails the test, saying how to install it, if none.
func V3Binary(t testing.TB) string {
	t.Helper()
	candidates := append([]string{os.Getenv("ARCA_DISTRIBUTION_V3")}, toolpath.Candidates("registry")...)
	for _, c := range candidates {
		if c == "" {
			continue
		}
		out, err := exec.Command(c, "--version").CombinedOutput()
		if err == nil && strings.Contains(string(out), " v3.") {
			return c
		}
	}
	t.Fatalf("upstreamreg: no distribution v3 registry binary: install it with `GOBIN=$PWD/.tools/bin go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2` (or set ARCA_DISTRIBUTION_V3)")
	return ""
}

func findBinary(t testing.TB, bin string) string {
	t.Helper()
	if bin == "" {
		bin = os.Getenv("ARCA_DOCKER_REGISTRY")
	}
	if bin == "" {
		bin = DefaultBinary
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("upstreamreg: %s not found (%v): install Debian's CNCF distribution 2.8 with `apt-get install -y docker-registry` (or set ARCA_DOCKER_REGISTRY)", bin, err)
	}
	return bin
}

// startOnce writes the config for host, starts the process and waits for
// it to answer on /v2/.
func (r *Registry) startOnce(host string) error {
	r.Host = host
	r.stderr.reset() // a failed attempt's output says nothing about this one
	if err := r.writeConfig(); err != nil {
		return err
	}
	if err := r.spawn(); err != nil {
		return err
	}
	if err := r.waitReady(15 * time.Second); err != nil {
		r.Stop()
		return err
	}
	return nil
}

func (r *Registry) writeConfig() error {
	var auth string
	switch r.opts.Auth {
	case Htpasswd:
		hash, err := bcrypt.GenerateFromPassword([]byte(r.Password), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("bcrypt: %w", err)
		}
		pw := filepath.Join(r.dir, "htpasswd")
		if err := os.WriteFile(pw, fmt.Appendf(nil, "%s:%s\n", r.Username, hash), 0o600); err != nil {
			return err
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: arca-test\n    path: %s\n", pw)
	case Token:
		bundle := filepath.Join(r.dir, "token-roots.pem")
		if err := os.WriteFile(bundle, r.token.rootPEM(), 0o600); err != nil {
			return err
		}
		auth = fmt.Sprintf("auth:\n  token:\n    realm: %s\n    service: %s\n    issuer: %s\n    rootcertbundle: %s\n",
			r.token.realm(), TokenService, TokenIssuer, bundle)
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: arca-test-secret
%s`, filepath.Join(r.dir, "data"), r.Host, auth)
	r.config = filepath.Join(r.dir, "config.yml")
	return os.WriteFile(r.config, []byte(cfg), 0o600)
}

func (r *Registry) spawn() error {
	cmd := exec.Command(r.binary, "serve", r.config)
	// Kill the registry if the test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", r.binary, err)
	}
	exited := make(chan struct{})
	copied := make(chan struct{})
	go func() { // distribution writes its combined-format access log to stdout
		defer close(copied)
		r.log.consume(stdout)
	}()
	go func() {
		<-copied
		_ = cmd.Wait()
		close(exited)
	}()
	r.mu.Lock()
	r.cmd, r.exited, r.stopped = cmd, exited, false
	r.mu.Unlock()
	return nil
}

func (r *Registry) waitReady(timeout time.Duration) error {
	// First that it is this registry that listens on Host: another
	// process that took the port would answer /v2/ as well.
	err := freeport.WaitListening(r.cmd.Process.Pid, r.Host, timeout, r.exited)
	if err == nil {
		err = arcaproc.WaitReady(r.URL()+"/v2/", timeout, r.exited, http.StatusOK, http.StatusUnauthorized)
	}
	switch {
	case errors.Is(err, freeport.ErrInUse), errors.Is(err, freeport.ErrExited) && freeport.InUse(r.stderr.String()):
		return fmt.Errorf("docker-registry on %s: %w", r.Host, freeport.ErrInUse)
	case errors.Is(err, freeport.ErrExited):
		return fmt.Errorf("docker-registry exited during startup")
	}
	if err != nil {
		return fmt.Errorf("docker-registry on %s not ready after %s", r.Host, timeout)
	}
	return nil
}

// Stop stops the registry process (idempotent). Storage is kept for Restart.
func (r *Registry) Stop() {
	r.mu.Lock()
	cmd, exited, stopped := r.cmd, r.exited, r.stopped
	r.stopped = true
	r.mu.Unlock()
	if cmd == nil || stopped {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Restart stops and starts the registry on the same port with the same
// storage (and, for Token, the same token service and signing key).
func (r *Registry) Restart(t testing.TB) {
	t.Helper()
	r.Stop()
	if err := r.writeConfig(); err != nil {
		t.Fatalf("upstreamreg: restart: %v", err)
	}
	if err := r.spawn(); err != nil {
		t.Fatalf("upstreamreg: restart: %v", err)
	}
	if err := r.waitReady(15 * time.Second); err != nil {
		t.Fatalf("upstreamreg: restart: %v\nstderr:\n%s", err, r.stderr.String())
	}
}

// URL returns "http://<Host>".
func (r *Registry) URL() string { return "http://" + r.Host }

// Stderr returns the registry's recent application log lines.
func (r *Registry) Stderr() string { return r.stderr.String() }

// ringBuffer keeps the last max lines written to it.
type ringBuffer struct {
	mu      sync.Mutex
	max     int
	lines   []string
	partial []byte
}

func (b *ringBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.partial = append(b.partial, p...)
	for {
		i := bytes.IndexByte(b.partial, '\n')
		if i < 0 {
			break
		}
		b.lines = append(b.lines, string(b.partial[:i]))
		b.partial = b.partial[i+1:]
		if len(b.lines) > b.max {
			b.lines = b.lines[len(b.lines)-b.max:]
		}
	}
	return len(p), nil
}

func (b *ringBuffer) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines, b.partial = nil, nil
}

func (b *ringBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// scanLines feeds every line of rd to fn until EOF.
func scanLines(rd io.Reader, fn func(string)) {
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
	_, _ = io.Copy(io.Discard, rd) // keep draining so the registry never blocks
}
