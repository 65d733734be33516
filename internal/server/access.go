package server

import (
	"errors"
	"net"

	"github.com/arcacache/arca/internal/auth"
)

// newAccess builds data-plane access control: closed (every request needs
// a credential the registry knows, or anonymous pull) unless the server
// was started with InsecureOpen on a loopback address.
func (s *Server) newAccess(principals auth.PrincipalLookup) (*auth.Service, error) {
	if s.opts.InsecureOpen {
		if !loopbackAddr(s.opts.Addr) {
			return nil, errors.New("--insecure-open turns off access control and is only allowed with a loopback --addr (127.0.0.1, [::1] or localhost)")
		}
		s.log.Warn("data-plane access control is OFF (--insecure-open): anyone who can reach " + s.opts.Addr + " may pull, push and delete")
		return auth.New(auth.Options{Open: true, Logger: s.log})
	}
	return auth.New(auth.Options{Store: s.meta, Principals: principals, Identities: s.meta, ExternalURL: s.opts.Management.ExternalURL,
		SubscriptionID: s.opts.Management.SubscriptionID, ResourceGroup: s.opts.Management.ResourceGroup,
		AccessTTL: s.opts.AccessTokenTTL, RefreshTTL: s.opts.RefreshTokenTTL, Logger: s.log})
}

func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
