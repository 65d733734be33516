package mgmt

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/arcacache/arca/internal/rules"
)

// Registry is a registry the server hosts and the host names (with or
// without port) the data plane serves it on.
type Registry struct {
	Name  string   `json:"name"`
	Hosts []string `json:"hosts"`
	// Static registries come from startup flags; the API cannot delete
	// them or change their hosts.
	Static bool `json:"-"`
}

// Registries is the set of registries: the default one, served on every
// host name no other registry claims, and others each served on their own
// host names. Those of startup flags are static; the management API adds
// and removes others. Readers see an immutable snapshot.
type Registries struct {
	def  string
	mu   sync.Mutex // serializes changes
	snap atomic.Pointer[registrySet]
}

type registrySet struct {
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
	rs := &registrySet{byName: map[string]Registry{def: {Name: def, Hosts: []string{}, Static: true}}, byHost: map[string]string{}}
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
		reg.Name, reg.Static = name, true
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
	out := &Registries{def: def}
	out.snap.Store(rs)
	return out, nil
}

// Errors of Add and Remove.
var (
	ErrRegistryStatic   = errors.New("registry is configured at startup")
	ErrRegistryHostUsed = errors.New("host name is served by another registry")
)

// Add adds or replaces a registry the API manages. A static registry of
// the same name keeps its hosts (startup flags win).
func (rs *Registries) Add(reg Registry) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	next, err := rs.with(reg)
	if err != nil {
		return err
	}
	rs.snap.Store(next)
	return nil
}

// Check reports the error Add(reg) would return, changing nothing.
func (rs *Registries) Check(reg Registry) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	_, err := rs.with(reg)
	return err
}

// with is the current set with reg added or replaced.
func (rs *Registries) with(reg Registry) (*registrySet, error) {
	cur := rs.snap.Load()
	reg.Name = strings.ToLower(reg.Name)
	if old, ok := cur.byName[reg.Name]; ok && old.Static {
		return nil, ErrRegistryStatic
	}
	next := &registrySet{byName: maps.Clone(cur.byName), byHost: maps.Clone(cur.byHost)}
	for h, n := range next.byHost {
		if n == reg.Name {
			delete(next.byHost, h)
		}
	}
	hosts := []string{}
	for _, h := range reg.Hosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if !validHost(h) {
			return nil, fmt.Errorf("host %q is not a host name or host:port", h)
		}
		if other, used := next.byHost[h]; used && other != reg.Name {
			return nil, fmt.Errorf("%w: %s (registry %s)", ErrRegistryHostUsed, h, other)
		}
		next.byHost[h] = reg.Name
		hosts = append(hosts, h)
	}
	reg.Hosts, reg.Static = hosts, false
	next.byName[reg.Name] = reg
	return next, nil
}

// SyncManaged makes the registries the API manages exactly managed (as
// the metadata store has them: another replica's changes); static ones
// stay, and keep their names and hosts. It returns the names added,
// changed or removed.
func (rs *Registries) SyncManaged(managed []Registry) []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	cur := rs.snap.Load()
	next := &registrySet{byName: map[string]Registry{}, byHost: map[string]string{}}
	for name, r := range cur.byName {
		if r.Static {
			next.byName[name] = r
			for _, h := range r.Hosts {
				next.byHost[h] = name
			}
		}
	}
	for _, r := range managed {
		name := strings.ToLower(r.Name)
		if _, static := next.byName[name]; static {
			continue
		}
		reg := Registry{Name: name, Hosts: []string{}}
		for _, h := range r.Hosts {
			if _, used := next.byHost[h]; !used && validHost(h) {
				next.byHost[h] = name
				reg.Hosts = append(reg.Hosts, h)
			}
		}
		next.byName[name] = reg
	}
	var changed []string
	for name, r := range next.byName {
		if old, ok := cur.byName[name]; !ok || !slices.Equal(old.Hosts, r.Hosts) {
			changed = append(changed, name)
		}
	}
	for name := range cur.byName {
		if _, ok := next.byName[name]; !ok {
			changed = append(changed, name)
		}
	}
	if len(changed) > 0 {
		rs.snap.Store(next)
	}
	return changed
}

// Remove removes a registry the API manages.
func (rs *Registries) Remove(name string) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	cur := rs.snap.Load()
	name = strings.ToLower(name)
	reg, ok := cur.byName[name]
	if !ok {
		return nil
	}
	if reg.Static {
		return ErrRegistryStatic
	}
	next := &registrySet{byName: maps.Clone(cur.byName), byHost: maps.Clone(cur.byHost)}
	delete(next.byName, name)
	for _, h := range reg.Hosts {
		delete(next.byHost, h)
	}
	rs.snap.Store(next)
	return nil
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
	r, ok := rs.snap.Load().byName[strings.ToLower(name)]
	return r, ok
}

// List returns the registries, the default first, then by name.
func (rs *Registries) List() []Registry {
	set := rs.snap.Load()
	out := make([]Registry, 0, len(set.byName))
	for _, r := range set.byName {
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
	set := rs.snap.Load()
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if name, ok := set.byHost[host]; ok {
		return name
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		if name, ok := set.byHost[h]; ok {
			return name
		}
		if name, ok := set.byHost["["+h+"]"]; ok {
			return name
		}
	}
	return rs.def
}

// ForRequest is ForHost of the request's Host header, the data plane's
// registry resolver.
func (rs *Registries) ForRequest(r *http.Request) string { return rs.ForHost(r.Host) }
