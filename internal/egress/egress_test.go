package egress

import (
	"context"
	"net"
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
