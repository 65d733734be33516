package cli

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Off a terminal, progress is plain lines: one when a step starts, one
// every interval while it runs, one when it ends; no bar, no \r.
func TestProgressLinesOffTerminal(t *testing.T) {
	var out lockedBuf
	p := newProgress(&out, "backup")
	p.interval = 20 * time.Millisecond
	p.Phase("blobs", 2, 2048)
	p.Advance(1, 1024)
	// Two periodic lines (the ticker's, however late a loaded machine
	// runs it) before the step ends.
	for deadline := time.Now().Add(30 * time.Second); strings.Count(out.String(), "\n") < 3; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no periodic lines after 30s at a 20ms interval: %q", out.String())
		}
	}
	p.Advance(1, 1024)
	p.Close()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) < 4 {
		t.Fatalf("want a start line, periodic lines and an end line; got %q", out.String())
	}
	if !strings.HasPrefix(lines[0], "backup: blobs: 0/2, 0 B/2.0 KiB") {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.HasPrefix(lines[1], "backup: blobs: 1/2, 1.0 KiB/2.0 KiB, ") || !strings.Contains(lines[1], "/s") {
		t.Errorf("periodic line %q: want items, bytes and rate", lines[1])
	}
	if last := lines[len(lines)-1]; !strings.HasPrefix(last, "backup: blobs: 2/2, 2.0 KiB/2.0 KiB") {
		t.Errorf("last line %q", last)
	}
	if strings.Contains(out.String(), "\r") {
		t.Errorf("lines mode wrote a carriage return: %q", out.String())
	}
	// After Close nothing more is printed.
	n := len(out.String())
	time.Sleep(60 * time.Millisecond)
	if len(out.String()) != n {
		t.Errorf("progress printed after Close: %q", out.String()[n:])
	}
}
