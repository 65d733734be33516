package upstream

import "strings"

// (Written by the lead so internal/cache compiles; the upstream client
// uses these same helpers: do not duplicate them.)

// dockerHubHosts are the names Docker Hub answers to.
var dockerHubHosts = map[string]bool{
	"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true, "registry.hub.docker.com": true,
}

// IsDockerHub reports whether host is Docker Hub.
func IsDockerHub(host string) bool { return dockerHubHosts[strings.ToLower(host)] }

// Endpoint returns the scheme-less API host for a login server: Docker
// Hub's API lives at registry-1.docker.io.
func Endpoint(host string) string {
	if IsDockerHub(host) {
		return "registry-1.docker.io"
	}
	return host
}

// NormalizePath returns the repository path the upstream API expects:
// single-segment Docker Hub names live under "library/".
func NormalizePath(host, path string) string {
	if IsDockerHub(host) && path != "" && !strings.Contains(path, "/") {
		return "library/" + path
	}
	return path
}
