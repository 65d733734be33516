package egress

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestPolicy(t *testing.T) {
	p, err := Parse([]string{"127.0.0.0/8", "::1/128", "registry.internal", "mirror.example:5000"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"127.0.0.1:5000": true, "[::1]:443": true, "registry.internal:443": true, "REGISTRY.internal": true,
		"mirror.example:5000": true, "mirror.example:443": false, "registry-1.docker.io:443": false,
		"10.0.0.1:443": false, "[::2]:443": false,
	} {
		if p.Allowed(addr) != want {
			t.Errorf("Allowed(%s) = %v", addr, !want)
		}
	}
	if _, err := Parse([]string{"10.0.0.0/99"}); err == nil {
		t.Error("bad CIDR accepted")
	}
	open, _ := Parse(nil)
	if !open.Open() || !open.Allowed("anything:1") {
		t.Error("empty policy must allow all")
	}
}

// A refused host is never dialled (so never resolved).
func TestDialRefusesBeforeDialling(t *testing.T) {
	p, _ := Parse([]string{"127.0.0.1"})
	called := ""
	dial := p.DialContext(func(_ context.Context, _, addr string) (net.Conn, error) {
		called = addr
		return nil, nil
	})
	if _, err := dial(context.Background(), "tcp", "registry-1.docker.io:443"); err == nil || !strings.Contains(err.Error(), "--upstream-allow") {
		t.Fatalf("err = %v", err)
	}
	if called != "" {
		t.Fatalf("dialled %s", called)
	}
	dial(context.Background(), "tcp", "127.0.0.1:80")
	if called != "127.0.0.1:80" {
		t.Fatal("allowed host not dialled")
	}
}

func TestPublic(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "2001:4860:4860::8888": true, "20.1.2.3": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"fd00::1": false, "fe80::1": false, "169.254.169.254": false, "fd00:ec2::254": false,
		"100.100.100.200": false, "0.0.0.0": false, "::": false, "::ffff:127.0.0.1": false,
		"::ffff:10.0.0.1": false, "224.0.0.1": false, "255.255.255.255": false, "64:ff9b::a00:1": false,
	} {
		if got := Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Public(%s) = %v, want %v", addr, got, want)
		}
	}
}

// Without an allow-list, a non-public address is reached only for a host
// the configuration names, and the check is on the address the name
// resolved to at connect time: a name that resolves to loopback (DNS
// rebinding, or a redirect to "localhost") is refused like the IP.
func TestUpstreamDialClosedByDefault(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	open, _ := Parse(nil)
	named := map[string]bool{ln.Addr().String(): true}
	dial := open.UpstreamDial(&net.Dialer{}, func(_ context.Context, hostport string) bool { return named[hostport] })
	ctx := context.Background()
	if c, err := dial(ctx, "tcp", ln.Addr().String()); err != nil {
		t.Fatalf("named loopback host refused: %v", err)
	} else {
		c.Close()
	}
	for _, addr := range []string{"localhost:" + port, "[::ffff:127.0.0.1]:" + port, "127.0.0.2:" + port} {
		_, err := dial(ctx, "tcp", addr)
		if !IsRefused(err) || RefusalRule(err) != RuleNonPublic {
			t.Errorf("dial %s: %v, want refused as non-public", addr, err)
		}
	}
	// Refused before any packet: the metadata address is never contacted.
	if _, err := dial(ctx, "tcp", "169.254.169.254:80"); !IsRefused(err) {
		t.Errorf("metadata address: %v, want refused", err)
	}
	// An allow-list keeps its meaning: listed hosts only, whatever names them.
	allow, _ := Parse([]string{"127.0.0.0/8"})
	dial = allow.UpstreamDial(&net.Dialer{}, func(context.Context, string) bool { return false })
	if c, err := dial(ctx, "tcp", ln.Addr().String()); err != nil {
		t.Errorf("allow-listed address refused: %v", err)
	} else {
		c.Close()
	}
}
