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

// TestServeAddrFile: `arca serve --addr 127.0.0.1:0 --addr-file F` listens
// on a port the kernel picks and writes that address to F once it serves
// (so whoever starts it needs no free-port guess); F goes at exit.
func TestServeAddrFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(arcaBin, "serve", "--addr", "127.0.0.1:0", "--addr-file", file, "--data-dir", t.TempDir(), "--insecure-open")
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer func() { _ = cmd.Process.Kill(); <-exited }()
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == ""; time.Sleep(20 * time.Millisecond) {
		if b, err := os.ReadFile(file); err == nil {
			addr = string(b)
		} else if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s: %v\n%s", file, err, logs.String())
		}
	}
	if !strings.HasSuffix(addr, "\n") {
		t.Errorf("address file %q: want one line", addr)
	}
	addr = strings.TrimSpace(addr)
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("address file holds %q: want 127.0.0.1 and the port the kernel picked", addr)
	}
	// The file appears once arca serves: no waiting for it to listen.
	if r := do(t, http.MethodGet, "http://"+addr+"/readyz", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("/readyz on the reported %s: %s", addr, r)
	}
	if !strings.Contains(logs.String(), "addr="+addr) {
		t.Errorf("the listening log line does not name %s:\n%s", addr, logs.String())
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		t.Fatal("no exit 30s after SIGTERM")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("address file after exit: %v, want it removed", err)
	}
}

// TestStartOnFreePortTakenAddress: when the address the harness picked is
// taken before arca binds it (here: on purpose, by the test), arca exits
// saying so and the harness starts it again on a fresh one, where it
// serves.
func TestStartOnFreePortTakenAddress(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var tried []string
	a := &arca{arcaproc.StartOnFreePort(t, func(addr string) arcaproc.Options {
		if len(tried) == 0 {
			addr = taken.Addr().String() // the race lost
		}
		tried = append(tried, addr)
		return arcaproc.Options{Bin: arcaBin, Addr: addr}
	})}
	if len(tried) != 2 {
		t.Fatalf("tried %v: want the taken address, then one fresh one", tried)
	}
	if a.Addr != tried[1] {
		t.Fatalf("serves on %s, want the second address %s", a.Addr, tried[1])
	}
	if r := do(t, http.MethodGet, a.URL()+"/readyz", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("/readyz: %s", r)
	}
}

// TestStartPicksItsPort: the harness's default start has arca pick its
// own port (no probe, no race) and learns it from arca.
func TestStartPicksItsPort(t *testing.T) {
	a, b := startArca(t), startArca(t)
	if a.Addr == b.Addr || strings.HasSuffix(a.Addr, ":0") {
		t.Fatalf("two servers on %s and %s: want two real ports", a.Addr, b.Addr)
	}
	for _, s := range []*arca{a, b} {
		if r := do(t, http.MethodGet, s.URL()+"/readyz", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("/readyz on %s: %s", s.Addr, r)
		}
	}
}
