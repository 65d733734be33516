package rules

import (
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/arcacache/arca/internal/oci"
)

var (
	resourceNameRe = regexp.MustCompile(`^[a-zA-Z0-9-]{5,50}$`)
	registryNameRe = regexp.MustCompile(`^[a-zA-Z0-9]{5,50}$`)
	dnsLabelRe     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ValidateName checks a cache rule or credential set name (kind says which,
// for the message): ^[a-zA-Z0-9-]*$, 5 to 50 characters (spec 2.3).
func ValidateName(kind, name string) error {
	if !resourceNameRe.MatchString(name) {
		return errorf(CodeInvalidName, "%s name %q is invalid: it must be 5 to 50 characters of letters, digits and dashes (^[a-zA-Z0-9-]*$)", kind, name)
	}
	return nil
}

// ValidRegistryName reports whether name is a valid registry name: 5 to 50
// alphanumerics (spec 2.3).
func ValidRegistryName(name string) bool { return registryNameRe.MatchString(name) }

// Source is a parsed sourceRepository: <login server>/<path>[/*], or
// <login server>/* for a registry-level wildcard (Path empty).
type Source struct {
	LoginServer string
	Path        string
	Wildcard    bool
}

// Upstream is the repository the source names, "<login server>/<path>".
func (s Source) Upstream() string {
	if s.Path == "" {
		return s.LoginServer
	}
	return s.LoginServer + "/" + s.Path
}

// Target is a parsed targetRepository: a repository path, <path>/*, or *
// alone (Prefix empty).
type Target struct {
	Prefix   string // the path, without "/*"
	Wildcard bool
}

// ParseSource parses and validates a sourceRepository.
func ParseSource(s string) (Source, error) {
	if s == "" {
		return Source{}, errorf(CodeInvalidRepository, "sourceRepository is required: the upstream repository as <login server>/<path>, e.g. docker.io/library/ubuntu")
	}
	host, path, ok := strings.Cut(s, "/")
	if !ok || host == "" {
		return Source{}, errorf(CodeInvalidRepository, "sourceRepository %q must be <login server>/<path>, e.g. docker.io/library/ubuntu or mcr.microsoft.com/*", s)
	}
	if strings.ContainsAny(path, ":@") {
		return Source{}, errorf(CodeInvalidRepository, "sourceRepository %q must not include a tag or digest (filter tags with artifactSyncFilters.tags). %s", s, msgNaming)
	}
	if strings.ToLower(s) != s {
		return Source{}, errorf(CodeInvalidRepository, "sourceRepository %q: %s", s, msgNaming)
	}
	if err := validLoginServer(host); err != "" {
		return Source{}, errorf(CodeInvalidRepository, "sourceRepository %q must start with the upstream's login server (a host name such as docker.io or localhost:5000): %s", s, err)
	}
	src := Source{LoginServer: host}
	switch {
	case path == "*":
		src.Wildcard = true
	case strings.HasSuffix(path, "/*"):
		src.Wildcard, src.Path = true, strings.TrimSuffix(path, "/*")
	default:
		src.Path = path
	}
	if strings.Contains(src.Path, "*") {
		return Source{}, errorf(CodeInvalidWildcard, "sourceRepository %q: a wildcard is only allowed as a trailing /* (e.g. docker.io/library/*)", s)
	}
	if src.Path == "" && !src.Wildcard {
		return Source{}, errorf(CodeInvalidRepository, "sourceRepository %q names no repository: use <login server>/<path> or <login server>/*", s)
	}
	if src.Path != "" && !oci.ValidRepository(src.Path) {
		return Source{}, errorf(CodeInvalidRepository, "sourceRepository %q: the path %q is not a valid repository name. %s", s, src.Path, msgNaming)
	}
	return src, nil
}

// ParseTarget parses and validates a targetRepository.
func ParseTarget(t string) (Target, error) {
	switch {
	case t == "":
		return Target{}, errorf(CodeInvalidRepository, "targetRepository is required: the repository path clients pull, e.g. ubuntu, dotnet/* or *")
	case t == "*":
		return Target{Wildcard: true}, nil
	}
	tg := Target{Prefix: t}
	if strings.HasSuffix(t, "/*") {
		tg = Target{Prefix: strings.TrimSuffix(t, "/*"), Wildcard: true}
	}
	if strings.Contains(tg.Prefix, "*") {
		return Target{}, errorf(CodeInvalidWildcard, "targetRepository %q: a wildcard is only allowed as a trailing /* or as * alone", t)
	}
	if strings.ContainsAny(t, ":@") {
		return Target{}, errorf(CodeInvalidRepository, "targetRepository %q must not include a tag or digest. %s", t, msgNaming)
	}
	if !oci.ValidRepository(tg.Prefix) {
		return Target{}, errorf(CodeInvalidRepository, "targetRepository %q is not a valid repository path (lowercase letters, digits and . _ - separators, components joined by /). %s", t, msgNaming)
	}
	return tg, nil
}

// ValidateLoginServer checks a credential set's loginServer: a host name or
// IP address with an optional port.
func ValidateLoginServer(h string) error {
	if err := validLoginServer(strings.ToLower(h)); err != "" {
		return errorf(CodeInvalidLoginServer, "loginServer %q is invalid: %s", h, err)
	}
	return nil
}

// validLoginServer returns why h is not a registry host, or "". Like
// docker, a host must contain a dot or a port, or be localhost, so that a
// forgotten registry ("library/ubuntu") is caught.
func validLoginServer(h string) string {
	host, port := h, ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		host, port = h[:i], h[i+1:]
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "invalid port " + strconv.Quote(port)
		}
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		if net.ParseIP(host[1:len(host)-1]) == nil {
			return "invalid IPv6 address"
		}
		return ""
	}
	if host == "" || len(host) > 253 {
		return "empty or too long host name"
	}
	if net.ParseIP(host) != nil {
		return ""
	}
	for _, label := range strings.Split(host, ".") {
		if !dnsLabelRe.MatchString(label) {
			return "host " + strconv.Quote(host) + " is not a valid DNS name"
		}
	}
	if !strings.Contains(host, ".") && port == "" && host != "localhost" {
		return "host " + strconv.Quote(host) + " has no dot or port (did you leave out the registry?)"
	}
	return ""
}

// dockerHubHosts are the names Docker Hub answers to.
var dockerHubHosts = map[string]bool{
	"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true, "registry.hub.docker.com": true,
}

// CanonicalLoginServer folds case and Docker Hub's aliases, for comparing
// a rule's source with a credential set's login server.
func CanonicalLoginServer(h string) string {
	h = strings.ToLower(h)
	if dockerHubHosts[h] {
		return "docker.io"
	}
	return h
}

// IsDockerHub reports whether login server h is Docker Hub.
func IsDockerHub(h string) bool { return CanonicalLoginServer(h) == "docker.io" }
