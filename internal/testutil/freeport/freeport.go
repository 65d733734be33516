// Package freeport hands test fixtures loopback addresses for processes
// that must be told their port before they bind it (docker-registry,
// MinIO, PostgreSQL, helper processes), and recognises the race this
// leaves: another process may take the port between the probe and the
// bind. A fixture that sees its process fail with ErrInUse starts it again
// on a fresh port (Retry); arca itself needs none of this, it listens on
// port 0 and reports the address it got (arca serve --addr-file).
package freeport

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Addr returns a loopback address with a port nobody listened on a moment
// ago. Nothing reserves it: a process told to bind it may find it taken.
func Addr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// ErrInUse marks a start that failed because the port was taken.
var ErrInUse = errors.New("address already in use")

// InUse reports whether a process's output says it could not bind its
// address because another process has it: Go's "bind: address already in
// use", PostgreSQL's "Address already in use", MinIO's "Specified port is
// already in use".
func InUse(output string) bool {
	o := strings.ToLower(output)
	return strings.Contains(o, "address already in use") || strings.Contains(o, "port is already in use")
}

// Attempts is how many fresh ports Retry tries: each loses only to a
// process that binds the same port in the moment between probe and bind,
// so losing every one means something else holds ports.
const Attempts = 5

// Retry calls start with a fresh address until it returns anything but
// an error wrapping ErrInUse, at most Attempts times, and returns the last
// address and error.
func Retry(start func(addr string) error) (string, error) {
	var addr string
	err := ErrInUse
	for i := 0; i < Attempts && errors.Is(err, ErrInUse); i++ {
		if addr, err = Addr(); err != nil {
			return "", err
		}
		err = start(addr)
	}
	if errors.Is(err, ErrInUse) {
		return addr, fmt.Errorf("%d fresh ports taken before the process bound them: %w", Attempts, err)
	}
	return addr, err
}

// ErrExited is WaitListening's error when the process exited first (and
// arcaproc.WaitReady's).
var ErrExited = errors.New("exited before ready")

// WaitListening waits until process pid, and no other, listens on addr
// (Linux: its sockets in /proc/net/tcp*, matched to /proc/PID/fd). It is
// how a fixture knows that what answers on addr is its process, not one
// that took the port first (a registry there would answer the readiness
// probe too). It returns an error wrapping ErrInUse when another process
// listens on addr, ErrExited when exited (the process's end) is closed
// first, and a timeout error after timeout.
func WaitListening(pid int, addr string, timeout time.Duration, exited <-chan struct{}) error {
	_, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return fmt.Errorf("port of %s: %w", addr, err)
	}
	for deadline := time.Now().Add(timeout); ; {
		mine, others, err := listeners(pid, uint16(port))
		switch {
		case err != nil:
			return err
		case others > 0:
			return fmt.Errorf("another process listens on %s: %w", addr, ErrInUse)
		case mine > 0:
			return nil
		}
		select {
		case <-exited:
			return ErrExited
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s after %s", addr, timeout)
		}
	}
}

// listeners counts the listening TCP sockets on port that pid holds and
// that others hold.
func listeners(pid int, port uint16) (mine, others int, err error) {
	var inodes []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if errors.Is(err, os.ErrNotExist) {
			continue // no IPv6
		}
		if err != nil {
			return 0, 0, err
		}
		inodes = append(inodes, listening(string(b), port)...)
	}
	if len(inodes) == 0 {
		return 0, 0, nil
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	fds, err := os.ReadDir(fdDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // gone: it exited
		return 0, 0, err
	}
	held := map[string]bool{}
	for _, fd := range fds {
		if link, err := os.Readlink(filepath.Join(fdDir, fd.Name())); err == nil {
			held[link] = true
		}
	}
	for _, ino := range inodes {
		if held["socket:["+ino+"]"] {
			mine++
		} else {
			others++
		}
	}
	return mine, others, nil
}

// listening returns the inodes of the sockets a /proc/net/tcp table lists
// in state LISTEN on port (any local address).
func listening(table string, port uint16) []string {
	var inodes []string
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(table, "\n")[1:] {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		f := strings.Fields(line)
		if len(f) >= 10 && f[3] == "0A" && strings.HasSuffix(f[1], want) {
			inodes = append(inodes, f[9])
		}
	}
	return inodes
}
