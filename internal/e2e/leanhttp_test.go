package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
)

// leanClient is a minimal HTTP/1.1 keep-alive client for benchmarks: one
// connection, no allocations per request beyond header parsing, bodies read
// into a reused buffer. It keeps the load generator's CPU cost small, since
// it shares the machine with the servers being measured.
type leanClient struct {
	addr string
	conn net.Conn
	br   *bufio.Reader
	buf  []byte
	// authz, if set, is sent as the Authorization header.
	authz string
}

func newLeanClient(addr string) *leanClient {
	return &leanClient{addr: addr, buf: make([]byte, 1<<20)}
}

func (c *leanClient) Close() {
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}

// get sends GET path and reads the whole body, returning status and body
// length. sink, if set, receives the body.
func (c *leanClient) get(path, accept string, sink io.Writer) (int, int64, error) {
	for attempt := 0; ; attempt++ {
		st, n, err := c.try(path, accept, sink)
		if err == nil || attempt == 1 || n > 0 {
			return st, n, err
		}
		c.Close() // a stale keep-alive connection: redial once
	}
}

func (c *leanClient) try(path, accept string, sink io.Writer) (int, int64, error) {
	if c.conn == nil {
		conn, err := net.Dial("tcp", c.addr)
		if err != nil {
			return 0, 0, err
		}
		c.conn, c.br = conn, bufio.NewReaderSize(conn, 64<<10)
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + c.addr + "\r\nUser-Agent: arca-bench\r\n"
	if accept != "" {
		req += "Accept: " + accept + "\r\n"
	}
	if c.authz != "" {
		req += "Authorization: " + c.authz + "\r\n"
	}
	if _, err := io.WriteString(c.conn, req+"\r\n"); err != nil {
		c.Close()
		return 0, 0, err
	}
	status, length, err := c.readHead()
	if err != nil {
		c.Close()
		return 0, 0, err
	}
	var n int64
	for n < length {
		want := min(int64(len(c.buf)), length-n)
		m, err := c.br.Read(c.buf[:want])
		if sink != nil && m > 0 {
			sink.Write(c.buf[:m])
		}
		n += int64(m)
		if err != nil {
			c.Close()
			return status, n, fmt.Errorf("body: %w after %d of %d bytes", err, n, length)
		}
	}
	return status, n, nil
}

// readHead parses the status line and headers; bodies must have a
// Content-Length (true for blob and manifest GETs).
func (c *leanClient) readHead() (status int, length int64, err error) {
	tp := textproto.NewReader(c.br)
	line, err := tp.ReadLine()
	if err != nil {
		return 0, 0, err
	}
	parts := strings.SplitN(line, " ", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(parts[1]); err != nil {
		return 0, 0, fmt.Errorf("bad status line %q", line)
	}
	length = -1
	for {
		l, err := tp.ReadLine()
		if err != nil {
			return 0, 0, err
		}
		if l == "" {
			break
		}
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.EqualFold(k, "Content-Length") {
			if length, err = strconv.ParseInt(strings.TrimSpace(v), 10, 64); err != nil {
				return 0, 0, fmt.Errorf("bad Content-Length %q", v)
			}
		}
		if ok && strings.EqualFold(k, "Transfer-Encoding") {
			return 0, 0, fmt.Errorf("chunked response not supported by the bench client")
		}
	}
	if length < 0 {
		return 0, 0, fmt.Errorf("response %d without Content-Length", status)
	}
	return status, length, nil
}
