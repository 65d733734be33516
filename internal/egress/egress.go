// Package egress decides which hosts arca may connect to on its own
// initiative: upstream registries, their token services and blob storage,
// secret stores and identity endpoints. An empty policy allows everything;
// a policy refuses other hosts before any DNS lookup, for air-gapped
// installs (and for tests, which must stay on loopback).
package egress

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// Policy is an allow-list of hosts and networks.
type Policy struct {
	hosts map[string]bool // lower-cased names or IPs, with or without ":port"
	nets  []*net.IPNet
}

// Parse builds a policy from entries: a host name, an IP, either with a
// ":port", or a CIDR ("127.0.0.0/8", "::1/128"). An empty list allows all.
func Parse(entries []string) (*Policy, error) {
	p := &Policy{hosts: map[string]bool{}}
	for _, e := range entries {
		e = strings.ToLower(strings.TrimSpace(e))
		if e == "" {
			continue
		}
		if strings.Contains(e, "/") {
			_, n, err := net.ParseCIDR(e)
			if err != nil {
				return nil, fmt.Errorf("egress: %q is not a host, HOST:PORT or CIDR: %w", e, err)
			}
			p.nets = append(p.nets, n)
			continue
		}
		p.hosts[e] = true
	}
	return p, nil
}

// Open reports whether the policy allows every host.
func (p *Policy) Open() bool { return p == nil || (len(p.hosts) == 0 && len(p.nets) == 0) }

// Allowed reports whether addr ("host:port" or "host") may be dialled.
func (p *Policy) Allowed(addr string) bool {
	if p.Open() {
		return true
	}
	addr = strings.ToLower(addr)
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if p.hosts[addr] || p.hosts[host] {
		return true
	}
	if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil {
		for _, n := range p.nets {
			if n.Contains(ip) {
				return true
			}
		}
	}
	return false
}

// DialContext wraps dial so that hosts outside the policy are refused
// before they are resolved.
func (p *Policy) DialContext(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if p.Open() {
		return dial
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if !p.Allowed(addr) {
			return nil, fmt.Errorf("egress: %s is not in --upstream-allow", addr)
		}
		return dial(ctx, network, addr)
	}
}
