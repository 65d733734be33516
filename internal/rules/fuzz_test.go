package rules

import (
	"strings"
	"testing"
)

// FuzzParseRepositories feeds source/target strings from API clients to
// the parsers and the index: no panics, and an accepted pair must index
// and map its own target.
func FuzzParseRepositories(f *testing.F) {
	for _, s := range [][2]string{
		{"docker.io/library/ubuntu", "ubuntu"},
		{"mcr.microsoft.com/*", "*"},
		{"docker.io/library/*", "dockerhub/*"},
		{"localhost:5000/a/b", "a/b"},
		{"[::1]:5000/x/*", "y/*"},
		{"docker.io/library/python:3.11", "python"},
		{"a.b/**", "*/x"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, source, target string) {
		src, serr := ParseSource(source)
		tgt, terr := ParseTarget(target)
		if serr != nil || terr != nil || src.Wildcard != tgt.Wildcard {
			return
		}
		ix := NewIndex([]Rule{{Name: "fuzzed", Source: source, Target: target}})
		repo := target
		if tgt.Wildcard {
			repo = strings.TrimSuffix(strings.TrimSuffix(target, "*"), "/")
			if repo != "" {
				repo += "/"
			}
			repo += "x"
		}
		if _, up, ok := ix.Match(repo); !ok || !strings.HasPrefix(up, src.LoginServer+"/") {
			t.Fatalf("rule %q => %q: Match(%q) = %q, %v", target, source, repo, up, ok)
		}
	})
}
