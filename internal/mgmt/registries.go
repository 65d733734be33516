package mgmt

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sort"
	"strings"

	"github.com/arcacache/arca/internal/rules"
)

// Registry is a registry the server hosts and the host names (with or
// without port) the data plane serves it on.
type Registry struct {
	Name  string   `json:"name"`
	Hosts []string `json:"hosts"`
}

// Registries is the configured set of registries: the default one, served
// on every host name no other registry claims, and others each served on
// its own host names. It is immutable.
type Registries struct {
	def    string
	byName map[string]Registry
	byHost map[string]string
}

// NewRegistries builds the set from the default registry's name and specs
// of the form NAME=host1,host2 (repeatable; a spec naming the default
// registry only records host names for it; a spec without "=" adds hosts
// to the registry of the spec before it).
func NewRegistries(defaultName string, specs []string) (*Registries, error) {
	if !rules.ValidRegistryName(defaultName) {
		return nil, fmt.Errorf("registry name %q: must be 5 to 50 alphanumeric characters", defaultName)
	}
	def := strings.ToLower(defaultName)
	rs := &Registries{def: def, byName: map[string]Registry{def: {Name: def, Hosts: []string{}}}, byHost: map[string]string{}}
	prev := ""
	for _, spec := range specs {
		name, hostList, ok := strings.Cut(spec, "=")
		if !ok && prev != "" {
			// ARCA_REGISTRY="team=a.example,b.example" arrives split at
			// commas: a bare host continues the previous registry's list.
			name, hostList, ok = prev, spec, true
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if !ok || !rules.ValidRegistryName(name) {
			return nil, fmt.Errorf("registry %q: want NAME=host1,host2 with NAME 5 to 50 alphanumeric characters", spec)
		}
		reg := rs.byName[name]
		reg.Name = name
		for _, h := range strings.Split(hostList, ",") {
			h = strings.ToLower(strings.TrimSpace(h))
			if h == "" {
				continue
			}
			if !validHost(h) {
				return nil, fmt.Errorf("registry %q: host %q is not a host name or host:port", name, h)
			}
			if other, dup := rs.byHost[h]; dup && other != name {
				return nil, fmt.Errorf("host %q is configured for registries %q and %q", h, other, name)
			}
			rs.byHost[h] = name
			reg.Hosts = append(reg.Hosts, h)
		}
		if name != def && len(reg.Hosts) == 0 {
			return nil, fmt.Errorf("registry %q: give it at least one host name (NAME=host1,host2)", name)
		}
		rs.byName[name] = reg
		prev = name
	}
	return rs, nil
}

var hostNameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$`)

// validHost accepts name, name:port, IPv4[:port] and [IPv6][:port].
func validHost(h string) bool {
	host := h
	if hh, _, err := net.SplitHostPort(h); err == nil {
		host = hh
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	return net.ParseIP(host) != nil || hostNameRe.MatchString(host)
}

// Default is the default registry's name.
func (rs *Registries) Default() string { return rs.def }

// Lookup finds a registry by name, ignoring case.
func (rs *Registries) Lookup(name string) (Registry, bool) {
	r, ok := rs.byName[strings.ToLower(name)]
	return r, ok
}

// List returns the registries, the default first, then by name.
func (rs *Registries) List() []Registry {
	out := make([]Registry, 0, len(rs.byName))
	for _, r := range rs.byName {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if (out[i].Name == rs.def) != (out[j].Name == rs.def) {
			return out[i].Name == rs.def
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// ForHost returns the registry serving host (a Host header: name, name:port,
// [v6]:port). An exact host:port entry wins over the bare host name.
func (rs *Registries) ForHost(host string) string {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if name, ok := rs.byHost[host]; ok {
		return name
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		if name, ok := rs.byHost[h]; ok {
			return name
		}
		if name, ok := rs.byHost["["+h+"]"]; ok {
			return name
		}
	}
	return rs.def
}

// ForRequest is ForHost of the request's Host header, the data plane's
// registry resolver.
func (rs *Registries) ForRequest(r *http.Request) string { return rs.ForHost(r.Host) }
