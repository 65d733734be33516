package freeport

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestAddrIsBindable(t *testing.T) {
	addr, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	ln.Close()
}

// The outputs are what the real processes print when their port is
// taken (captured from each with the port held by another listener).
func TestInUse(t *testing.T) {
	for _, tc := range []struct {
		name, output string
		want         bool
	}{
		{"arca", "arca: listen: listen tcp 127.0.0.1:46889: bind: address already in use", true},
		{"docker-registry", `time="2026-12-01T21:38:22Z" level=fatal msg="listen tcp 127.0.0.1:46889: bind: address already in use"`, true},
		{"minio", "FATAL Unable to start the server: Specified port is already in use\n      > Please ensure no other program uses the same address/port", true},
		{"postgres", `LOG:  could not bind IPv4 address "127.0.0.1": Address already in use` + "\nWARNING:  could not create listen socket for \"127.0.0.1\"\nFATAL:  could not create any TCP/IP sockets", true},
		{"other failure", "arca: open metadata: database is locked", false},
		{"no output", "", false},
	} {
		if got := InUse(tc.output); got != tc.want {
			t.Errorf("%s: InUse = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestInUseFromARealBind(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, err = net.Listen("tcp", ln.Addr().String())
	if err == nil || !InUse(err.Error()) {
		t.Fatalf("second listen on %s: %v, want one InUse recognises", ln.Addr(), err)
	}
}

func TestRetry(t *testing.T) {
	other := errors.New("config invalid")
	for _, tc := range []struct {
		name      string
		fails     []error // what the attempts return, in order; nil after
		wantCalls int
		wantErr   error
	}{
		{"first port free", nil, 1, nil},
		{"two ports taken", []error{ErrInUse, ErrInUse}, 3, nil},
		{"another failure is not retried", []error{other}, 1, other},
		{"taken, then another failure", []error{ErrInUse, other}, 2, other},
		{"every port taken", []error{ErrInUse, ErrInUse, ErrInUse, ErrInUse, ErrInUse}, Attempts, ErrInUse},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var seen []string
			addr, err := Retry(func(addr string) error {
				seen = append(seen, addr)
				if n := len(seen); n <= len(tc.fails) {
					return tc.fails[n-1]
				}
				return nil
			})
			if len(seen) != tc.wantCalls {
				t.Fatalf("%d attempts (%v), want %d", len(seen), seen, tc.wantCalls)
			}
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if addr != seen[len(seen)-1] {
				t.Errorf("returned %s, want the last attempt's %s", addr, seen[len(seen)-1])
			}
		})
	}
}

func TestWaitListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if err := WaitListening(os.Getpid(), addr, time.Second, nil); err != nil {
		t.Errorf("this process, which listens on %s: %v", addr, err)
	}

	// A process that does not hold the listener: what a fixture sees
	// when another process took its port.
	sleeper := exec.Command("sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() }()
	if err := WaitListening(sleeper.Process.Pid, addr, time.Second, nil); !errors.Is(err, ErrInUse) {
		t.Errorf("another process on %s: %v, want ErrInUse", addr, err)
	}

	free, err := Addr()
	if err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	quitter := exec.Command("true")
	if err := quitter.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = quitter.Wait(); close(exited) }()
	if err := WaitListening(quitter.Process.Pid, free, 30*time.Second, exited); !errors.Is(err, ErrExited) {
		t.Errorf("a process that exits without listening: %v, want ErrExited", err)
	}
	if err := WaitListening(sleeper.Process.Pid, free, 100*time.Millisecond, nil); err == nil || errors.Is(err, ErrInUse) {
		t.Errorf("nobody listening: %v, want a timeout", err)
	}
}
