package cache

import (
	"testing"

	"github.com/arcacache/arca/internal/rules"
)

func TestReverseIndex(t *testing.T) {
	ix := newReverseIndex([]rules.Rule{
		{Name: "hub-lib", Source: "docker.io/library/*", Target: "hub/*"},
		{Name: "hub-all", Source: "docker.io/*", Target: "dockerhub/*"},
		{Name: "alpine", Source: "docker.io/library/alpine", Target: "alpine"},
		{Name: "mcr", Source: "mcr.microsoft.com/*", Target: "*"},
		{Name: "local", Source: "127.0.0.1:5001/team/app", Target: "team-app"},
	})
	for _, tc := range []struct {
		host, path, rule, local string
	}{
		{"docker.io", "library/nginx", "hub-lib", "hub/nginx"},
		{"docker.io", "nginx", "hub-lib", "hub/nginx"}, // Docker Hub's short names
		{"index.docker.io", "library/nginx", "hub-lib", "hub/nginx"},
		{"docker.io", "bitnami/redis", "hub-all", "dockerhub/bitnami/redis"},
		{"docker.io", "alpine", "alpine", "alpine"}, // static wins
		{"mcr.microsoft.com", "dotnet/sdk", "mcr", "dotnet/sdk"},
		{"127.0.0.1:5001", "team/app", "local", "team-app"},
		{"ghcr.io", "org/x", "", ""},
		{"127.0.0.1:5001", "team/other", "", ""},
	} {
		r, _, local, ok := ix.match(tc.host, tc.path)
		name := ""
		if ok {
			name = r.Name
		}
		if name != tc.rule || local != tc.local {
			t.Errorf("match(%s, %s) = %q %q, want %q %q", tc.host, tc.path, name, local, tc.rule, tc.local)
		}
	}
}
