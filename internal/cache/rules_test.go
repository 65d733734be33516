package cache

import (
	"context"
	"sync"
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

type countingStore struct {
	mu   sync.Mutex
	gen  int64
	list int
}

func (c *countingStore) RulesGeneration(context.Context, string) (int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen, nil
}

func (c *countingStore) ListCacheRules(context.Context, string) ([]rules.Rule, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.list++
	return []rules.Rule{{Name: "r1", Source: "ghcr.io/org/*", Target: "gh/*"}}, nil
}

func (c *countingStore) GetCredentialSet(context.Context, string, string) (rules.CredentialSet, error) {
	return rules.CredentialSet{}, nil
}

// Concurrent lookups while the generation is rechecked: no data race, and
// the rules are only listed again when the generation moves.
func TestRuleSetConcurrentReload(t *testing.T) {
	st := &countingStore{gen: 1}
	rs := NewRuleSet(st, nil)
	rs.recheckEvery = 0 // recheck on every lookup
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				if _, ok, err := rs.Resolve(context.Background(), "default", "gh/app", ""); err != nil || !ok {
					t.Errorf("resolve: %v %v", ok, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if st.list > 8 { // at most one listing per goroutine racing the first load
		t.Fatalf("rules listed %d times for one generation", st.list)
	}
	st.mu.Lock()
	st.gen = 2
	st.mu.Unlock()
	before := st.list
	rs.Resolve(context.Background(), "default", "gh/app", "")
	if st.list != before+1 {
		t.Fatalf("a new generation did not reload the rules")
	}
}

type forgetRecorder struct {
	mu       sync.Mutex
	prefixes []string
}

func (f *forgetRecorder) ForgetCredentials(prefix string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prefixes = append(f.prefixes, prefix)
}

// A new rules generation (a rule or credential set changed, here or on
// another replica) drops the registry's upstream logins; a recheck that
// finds the same generation does not.
func TestRuleSetForgetsLoginsOnChange(t *testing.T) {
	st := &countingStore{gen: 1}
	rs := NewRuleSet(st, nil)
	fr := &forgetRecorder{}
	rs.UseCredentialCache(fr)
	rs.recheckEvery = 0
	ctx := context.Background()
	lookup := func() {
		t.Helper()
		if _, _, err := rs.Resolve(ctx, "Default", "gh/app", ""); err != nil {
			t.Fatal(err)
		}
	}
	lookup()
	lookup()
	if len(fr.prefixes) != 0 {
		t.Fatalf("forgot on first load or an unchanged generation: %v", fr.prefixes)
	}
	st.mu.Lock()
	st.gen = 2
	st.mu.Unlock()
	lookup()
	rs.Invalidate("Default")
	if len(fr.prefixes) != 2 || fr.prefixes[0] != "default/" || fr.prefixes[1] != "default/" {
		t.Fatalf("forgotten prefixes %v, want default/ after the new generation and after Invalidate", fr.prefixes)
	}
}
