package e2e

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
)

// TestReleaseScript: scripts/release.sh builds a static binary whose
// `arca version` names the release version and the commit, lists it in
// SHA256SUMS, and builds the same bytes twice.
func TestReleaseScript(t *testing.T) {
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	const version = "v1.2.3-test"
	var sums []string
	var out1 string
	for i := range 2 {
		out := filepath.Join(t.TempDir(), "dist")
		cmd := exec.Command("bash", "scripts/release.sh", version, out)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "ARCHES=amd64")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("release.sh: %v\n%s", err, b)
		}
		b, err := os.ReadFile(filepath.Join(out, "SHA256SUMS"))
		if err != nil {
			t.Fatal(err)
		}
		sums = append(sums, string(b))
		if i == 0 {
			out1 = out
		}
	}
	if sums[0] != sums[1] {
		t.Errorf("two release builds differ:\n%s\n%s", sums[0], sums[1])
	}
	name := "arca-" + version + "-linux-amd64"
	if !strings.Contains(sums[0], "  "+name+"\n") {
		t.Errorf("SHA256SUMS does not list %s:\n%s", name, sums[0])
	}
	check := exec.Command("sha256sum", "-c", "SHA256SUMS")
	check.Dir = out1
	if b, err := check.CombinedOutput(); err != nil {
		t.Errorf("sha256sum -c: %v\n%s", err, b)
	}
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	v, err := exec.Command(filepath.Join(out1, name), "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "arca " + version + " (commit " + strings.TrimSpace(string(head)); !strings.HasPrefix(string(v), want) {
		t.Errorf("arca version = %q, want it to start with %q", v, want)
	}
	if file, err := exec.Command("file", filepath.Join(out1, name)).Output(); err == nil && !strings.Contains(string(file), "statically linked") {
		t.Errorf("release binary is not static: %s", file)
	}
}

// TestSystemdNotify: under a Type=notify unit (NOTIFY_SOCKET set), the
// real binary sends READY=1 once it serves, and STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, Env: []string{"NOTIFY_SOCKET=" + sock}})}
	read := func() string {
		_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		buf := make([]byte, 256)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v\n%s", err, a.Logs())
		}
		return string(buf[:n])
	}
	if got := read(); got != "READY=1" {
		t.Errorf("first notification %q, want READY=1", got)
	}
	if r := do(t, "GET", a.URL()+"/readyz", nil, nil); r.Status != http.StatusOK {
		t.Errorf("READY=1 sent but /readyz: %s", r)
	}
	if err := a.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := read(); got != "STOPPING=1" {
		t.Errorf("notification on SIGTERM %q, want STOPPING=1", got)
	}
}

// TestSystemdUnitVerifies: deploy/systemd/arca.service passes
// `systemd-analyze verify` (with ExecStart pointing at a real binary) and
// keeps its hardening and readiness settings.
func TestSystemdUnitVerifies(t *testing.T) {
	root, err := arcaproc.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "deploy", "systemd", "arca.service"))
	if err != nil {
		t.Fatal(err)
	}
	unit := string(b)
	for _, want := range []string{"Type=notify", "DynamicUser=yes", "StateDirectory=arca", "ProtectSystem=strict", "NoNewPrivileges=yes", "--data-dir /var/lib/arca"} {
		if !strings.Contains(unit, "\n"+want) && !strings.Contains(unit, " "+want) {
			t.Errorf("arca.service lacks %s", want)
		}
	}
	path := filepath.Join(t.TempDir(), "arca.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(unit, "/usr/local/bin/arca", arcaBin)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(toolPath(t, "systemd-analyze"), "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
