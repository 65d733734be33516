package rules

import (
	"fmt"
	"sync"
	"testing"
)

func TestIndexMatch(t *testing.T) {
	ix := NewIndex([]Rule{
		{Name: "hub", Source: "docker.io/library/*", Target: "dockerhub/*", CredentialSet: "dockerhub"},
		{Name: "mcrall", Source: "mcr.microsoft.com/*", Target: "*"},
		{Name: "dotnet", Source: "mcr.microsoft.com/dotnet/*", Target: "dotnet/*"},
		{Name: "libdotnet", Source: "mcr.microsoft.com/dotnet/*", Target: "library/dotnet/*"},
		{Name: "pinned", Source: "quay.io/org/sdk", Target: "dotnet/sdk"},
		{Name: "ubuntu", Source: "docker.io/library/ubuntu", Target: "ubuntu", CredentialSet: "dockerhub"},
		{Name: "quaycache", Source: "quay.io/x/y/*", Target: "quay-cache/x/y/*"},
		{Name: "broken", Source: "not a source", Target: "broken"},
	})
	if ix.Len() != 7 {
		t.Fatalf("Len = %d, want 7 (the broken rule skipped)", ix.Len())
	}
	for _, tc := range []struct {
		repo, rule, upstream string
	}{
		{"dockerhub/nginx", "hub", "docker.io/library/nginx"},
		{"dockerhub/bitnami/redis", "hub", "docker.io/library/bitnami/redis"},
		{"dotnet/sdk", "pinned", "quay.io/org/sdk"},
		{"dotnet/runtime", "dotnet", "mcr.microsoft.com/dotnet/runtime"},
		{"dotnet/runtime/deps", "dotnet", "mcr.microsoft.com/dotnet/runtime/deps"},
		{"library/dotnet/app1", "libdotnet", "mcr.microsoft.com/dotnet/app1"},
		{"library/python/app3", "mcrall", "mcr.microsoft.com/library/python/app3"},
		{"myapp/image1", "mcrall", "mcr.microsoft.com/myapp/image1"},
		{"dotnet", "mcrall", "mcr.microsoft.com/dotnet"},
		{"ubuntu", "ubuntu", "docker.io/library/ubuntu"},
		{"quay-cache/x/y/z", "quaycache", "quay.io/x/y/z"},
		{"quay-cache/x/y", "mcrall", "mcr.microsoft.com/quay-cache/x/y"},
		{"dockerhub", "mcrall", "mcr.microsoft.com/dockerhub"},
	} {
		r, up, ok := ix.Match(tc.repo)
		if !ok || r.Name != tc.rule || up != tc.upstream {
			name := "<none>"
			if r != nil {
				name = r.Name
			}
			t.Errorf("Match(%q) = %s, %q, %v; want %s, %q", tc.repo, name, up, ok, tc.rule, tc.upstream)
		}
	}

	narrow := NewIndex([]Rule{{Name: "dotnet", Source: "mcr.microsoft.com/dotnet/*", Target: "dotnet/*"}})
	for _, repo := range []string{"dotnet", "dotnetx/sdk", "other/dotnet/sdk", ""} {
		if r, _, ok := narrow.Match(repo); ok {
			t.Errorf("Match(%q) = %s, want no match", repo, r.Name)
		}
	}
	if _, _, ok := NewIndex(nil).Match("x"); ok {
		t.Error("empty index matched")
	}
}

func TestIndexConcurrent(t *testing.T) {
	ix := NewIndex(benchRules(100))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				repo := fmt.Sprintf("team%d/app%d", (g*i)%50, i)
				if _, up, ok := ix.Match(repo); !ok || up == "" {
					t.Errorf("Match(%q) failed", repo)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// benchRules is n rules: n/2 repository wildcards team<i>/* and n/2 static
// targets static<i>/app.
func benchRules(n int) []Rule {
	rs := make([]Rule, 0, n)
	for i := range n / 2 {
		rs = append(rs, Rule{Name: fmt.Sprintf("wild%d", i), Source: fmt.Sprintf("mcr.microsoft.com/team%d/*", i), Target: fmt.Sprintf("team%d/*", i)})
		rs = append(rs, Rule{Name: fmt.Sprintf("static%d", i), Source: fmt.Sprintf("quay.io/org/app%d", i), Target: fmt.Sprintf("static%d/app", i)})
	}
	return rs
}

func BenchmarkIndexMatch(b *testing.B) {
	ix := NewIndex(benchRules(1000))
	if ix.Len() != 1000 {
		b.Fatalf("indexed %d rules", ix.Len())
	}
	repos := []string{"team499/a/b/c", "static250/app", "team7/app", "nomatch/at/all"}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		ix.Match(repos[i%len(repos)])
	}
}

func BenchmarkNewIndex(b *testing.B) {
	rs := benchRules(1000)
	b.ReportAllocs()
	for b.Loop() {
		NewIndex(rs)
	}
}
