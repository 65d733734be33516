package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
	"time"
)

func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 256)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), "@arca-sdnotify-test-" + t.Name()} {
		c := listen(t, name)
		if err := Notify(name, Ready); err != nil {
			t.Fatalf("Notify(%s): %v", name, err)
		}
		if got := read(t, c); got != Ready {
			t.Errorf("%s got %q, want %q", name, got, Ready)
		}
	}
	if err := Notify("", Ready); err != nil {
		t.Errorf("Notify without a socket: %v", err)
	}
	if err := Notify(filepath.Join(t.TempDir(), "nobody"), Ready); err == nil {
		t.Error("Notify to a socket nobody listens on: no error")
	}
}
