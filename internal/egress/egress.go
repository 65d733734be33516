// Package egress decides which hosts arca may connect to on its own
// initiative: upstream registries, their token services and blob storage,
// secret stores and identity endpoints.
//
// With an allow-list (--upstream-allow) only listed hosts are dialled and
// others are refused before any DNS lookup, for air-gapped installs (and
// for tests, which must stay on loopback). Without one, upstream traffic is
// closed by default against server-side request forgery: an upstream, its
// token service or a blob redirect may reach any public address, but a
// loopback, private (RFC 1918, ULA), link-local (169.254.169.254 included),
// shared (CGNAT) or otherwise special address only when arca's
// configuration names the host (a cache rule or credential set). The check
// runs on the resolved address at connect time, so DNS rebinding does not
// get around it.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
)

// RefusedError is a connection the policy refused.
type RefusedError struct {
	Addr   string // what was dialled
	Reason string
	// Rule is which rule refused, in words without addresses (fit for a
	// client's error message).
	Rule string
}

// Refusal rules.
const (
	RuleAllowList = "the host is not in --upstream-allow"
	RuleNonPublic = "a non-public address that no cache rule or credential set names (--upstream-allow permits it)"
)

// RefusalRule returns the Rule of the refusal err wraps ("" if none).
func RefusalRule(err error) string {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Rule
	}
	return ""
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("egress: refused to connect to %s: %s", e.Addr, e.Reason)
}

// IsRefused reports whether err is (or wraps) a policy refusal.
func IsRefused(err error) bool {
	var r *RefusedError
	return errors.As(err, &r)
}

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
			return nil, &RefusedError{Addr: addr, Reason: "not in --upstream-allow", Rule: RuleAllowList}
		}
		return dial(ctx, network, addr)
	}
}

// Named reports whether arca's configuration names host ("host:port" as
// dialled) as an upstream: such hosts may be on non-public addresses.
type Named func(ctx context.Context, hostport string) bool

// UpstreamDial is the dialer of upstream traffic. With an allow-list it is
// DialContext(d.DialContext). Without one, it refuses a resolved address
// that is not public unless named says the host is named explicitly.
func (p *Policy) UpstreamDial(d *net.Dialer, named Named) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if !p.Open() {
		return p.DialContext(d.DialContext)
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		dd := *d
		// Control may run concurrently (Happy Eyeballs): ask named once.
		var once sync.Once
		var isNamed bool
		dd.Control = func(_, resolved string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(resolved)
			if err != nil {
				return &RefusedError{Addr: addr, Reason: "unparsable address " + resolved, Rule: RuleNonPublic}
			}
			if Public(ap.Addr()) {
				return nil
			}
			once.Do(func() { isNamed = named != nil && named(ctx, strings.ToLower(addr)) })
			if isNamed {
				return nil
			}
			return &RefusedError{Addr: addr, Reason: fmt.Sprintf("%s is not a public address and no cache rule or credential set names this host (add it to --upstream-allow to permit it)", ap.Addr()), Rule: RuleNonPublic}
		}
		return dd.DialContext(ctx, network, addr)
	}
}

// special are ranges that are not public beyond what netip's predicates
// cover: "this network", shared address space (CGNAT; Alibaba's metadata
// service is 100.100.100.200), IETF protocol assignments, benchmarking,
// reserved and broadcast, NAT64 (which could reach any IPv4 address).
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"), netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("240.0.0.0/4"), netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
}

// Public reports whether a is a globally routed unicast address: not
// loopback, private (RFC 1918, ULA), link-local, multicast, unspecified
// or special.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range special {
		if p.Contains(a) {
			return false
		}
	}
	return true
}
