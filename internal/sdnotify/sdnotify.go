// Package sdnotify tells systemd (Type=notify units) how the service is
// doing: one datagram to the socket $NOTIFY_SOCKET names, as sd_notify(3).
package sdnotify

import (
	"fmt"
	"net"
)

// Readiness and shutdown states.
const (
	Ready    = "READY=1"
	Stopping = "STOPPING=1"
)

// Notify sends state to socket (the value of $NOTIFY_SOCKET: a path, or
// "@name" for the abstract namespace, which Go's net maps). An empty
// socket means no service manager listens: nothing is sent.
func Notify(socket, state string) error {
	if socket == "" {
		return nil
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	return nil
}
