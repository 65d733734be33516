package rules

import (
	"errors"
	"strings"
	"testing"
)

func rule(name, source, target string) Rule {
	r := Rule{Name: name, Source: source, Target: target}
	if IsDockerHub(strings.SplitN(source, "/", 2)[0]) {
		r.CredentialSet = "dockerhub"
	}
	return r
}

// testEnv has credential sets "dockerhub" (docker.io) and "ghcrcreds"
// (ghcr.io) and the given pushed repositories.
func testEnv(others []Rule, repos ...string) Env {
	sets := map[string]CredentialSet{
		"dockerhub": {Name: "dockerhub", LoginServer: "docker.io"},
		"ghcrcreds": {Name: "ghcrcreds", LoginServer: "GHCR.io"},
	}
	return Env{
		Others: others,
		CredentialSet: func(n string) (CredentialSet, bool, error) {
			cs, ok := sets[strings.ToLower(n)]
			return cs, ok, nil
		},
		RepositoryExists: func(repo string) (bool, error) {
			for _, r := range repos {
				if r == repo {
					return true, nil
				}
			}
			return false, nil
		},
		RepositoryUnder: func(prefix string) (string, bool, error) {
			for _, r := range repos {
				if strings.HasPrefix(r, prefix) {
					return r, true, nil
				}
			}
			return "", false, nil
		},
	}
}

// TestOverlapSeed002 runs the examples of seed 002 ("Limitations for
// Wildcard based cache rules" and "for Static/fixed cache rules") and of
// spec 3.1. contoso.azurecr.io/ is the registry's own host, so the target
// is the path after it.
func TestOverlapSeed002(t *testing.T) {
	for _, tc := range []struct {
		desc     string
		existing Rule
		add      Rule
		code     string
	}{
		{
			desc:     "seed 002 wildcard example 1: * blocks library/*",
			existing: rule("mcrall", "mcr.microsoft.com/*", "*"),
			add:      rule("dockerlib", "docker.io/library/*", "library/*"),
			code:     CodeWildcardOverlap,
		},
		{
			desc:     "seed 002 wildcard example 2: library/* blocks library/dotnet/*",
			existing: rule("mcrlib", "mcr.microsoft.com/library/*", "library/*"),
			add:      rule("dockerdotnet", "docker.io/library/dotnet/*", "library/dotnet/*"),
			code:     CodeWildcardOverlap,
		},
		{
			desc:     "seed 002 static example 1: library/dotnet allowed under *",
			existing: rule("mcrall", "mcr.microsoft.com/*", "*"),
			add:      rule("dotnet", "docker.io/library/dotnet", "library/dotnet"),
		},
		{
			desc:     "containment the other way: library/dotnet/* exists, library/* blocked",
			existing: rule("dockerdotnet", "docker.io/library/dotnet/*", "library/dotnet/*"),
			add:      rule("mcrlib", "mcr.microsoft.com/library/*", "library/*"),
			code:     CodeWildcardOverlap,
		},
		{
			desc:     "library/dotnet/* exists, * blocked",
			existing: rule("dockerdotnet", "docker.io/library/dotnet/*", "library/dotnet/*"),
			add:      rule("mcrall", "mcr.microsoft.com/*", "*"),
			code:     CodeWildcardOverlap,
		},
		{
			desc:     "two rules targeting *",
			existing: rule("mcrall", "mcr.microsoft.com/*", "*"),
			add:      rule("quayall", "quay.io/*", "*"),
			code:     CodeWildcardOverlap,
		},
		{
			desc:     "same wildcard path",
			existing: rule("dotnet1", "mcr.microsoft.com/dotnet/*", "dotnet/*"),
			add:      rule("dotnet2", "quay.io/dotnet/*", "dotnet/*"),
			code:     CodeWildcardOverlap,
		},
		{
			desc:     "sibling wildcards do not overlap (wildcards doc: library/dotnet/* and library/python/*)",
			existing: rule("libdotnet", "mcr.microsoft.com/dotnet/*", "library/dotnet/*"),
			add:      rule("libpython", "docker.io/library/python/*", "library/python/*"),
		},
		{
			desc:     "prefix that is not a path ancestor does not overlap",
			existing: rule("dotnet1", "mcr.microsoft.com/dotnet/*", "dotnet/*"),
			add:      rule("dotnetx", "mcr.microsoft.com/dotnet-x/*", "dotnet-x/*"),
		},
		{
			desc:     "static under a repository wildcard",
			existing: rule("dotnet1", "mcr.microsoft.com/dotnet/*", "dotnet/*"),
			add:      rule("dotnetsdk", "mcr.microsoft.com/dotnet/sdk", "dotnet/sdk"),
		},
		{
			desc:     "static equal to the wildcard's prefix",
			existing: rule("dotnet1", "mcr.microsoft.com/dotnet/*", "dotnet/*"),
			add:      rule("dotnet", "mcr.microsoft.com/dotnet", "dotnet"),
		},
		{
			desc:     "wildcard added over an existing static",
			existing: rule("dotnet", "docker.io/library/dotnet", "library/dotnet"),
			add:      rule("mcrall", "mcr.microsoft.com/*", "*"),
		},
		{
			desc:     "two identical static targets",
			existing: rule("ubuntu1", "docker.io/library/ubuntu", "ubuntu"),
			add:      rule("ubuntu2", "quay.io/ubuntu/ubuntu", "ubuntu"),
			code:     CodeTargetConflict,
		},
		{
			desc:     "different static targets from the same source",
			existing: rule("ubuntu1", "docker.io/library/ubuntu", "ubuntu"),
			add:      rule("ubuntu2", "docker.io/library/ubuntu", "ubuntu2"),
		},
	} {
		add := tc.add
		err := Check(&add, nil, testEnv([]Rule{tc.existing}))
		if codeOf(err) != tc.code {
			t.Errorf("%s: Check = %v, want code %q", tc.desc, err, tc.code)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.existing.Name) {
			t.Errorf("%s: error %q does not name the conflicting rule %q", tc.desc, err, tc.existing.Name)
		}
	}
}

func TestCheck(t *testing.T) {
	existing := []Rule{rule("mcrall", "mcr.microsoft.com/*", "*")}
	for _, tc := range []struct {
		desc     string
		r        Rule
		prev     *Rule
		env      Env
		code     string
		contains string
	}{
		{desc: "static target already pushed", r: rule("hello", "mcr.microsoft.com/hello-world", "hello-world"),
			env: testEnv(nil, "hello-world"), code: CodeTargetPresent, contains: "Target repository 'hello-world' is already present in registry"},
		{desc: "static target with only a deeper repo pushed", r: rule("hello", "mcr.microsoft.com/hello-world", "hello-world"),
			env: testEnv(nil, "hello-world/sub")},
		{desc: "wildcard prefix matches a pushed repo", r: rule("quaycache", "quay.io/x/y/*", "quay-cache/x/y/*"),
			env: testEnv(nil, "quay-cache/x/y/z"), code: CodeTargetPrefixPresent, contains: "prefix 'quay-cache/x/y/*'"},
		{desc: "wildcard prefix is itself a pushed repo (not under it)", r: rule("quaycache", "quay.io/x/y/*", "quay-cache/x/y/*"),
			env: testEnv(nil, "quay-cache/x/y", "quay-cache/x/yz")},
		{desc: "registry wildcard with any pushed repo", r: rule("mcrall", "mcr.microsoft.com/*", "*"),
			env: testEnv(nil, "anything"), code: CodeTargetPrefixPresent},
		{desc: "registry wildcard on an empty registry", r: rule("mcrall", "mcr.microsoft.com/*", "*"), env: testEnv(nil)},
		{desc: "missing credential set", r: Rule{Name: "ghcr1", Source: "ghcr.io/a/b", Target: "b", CredentialSet: "nosuchset"},
			env: testEnv(nil), code: CodeCredentialSetNotFound, contains: "nosuchset"},
		{desc: "login server mismatch", r: Rule{Name: "ghcr1", Source: "quay.io/a/b", Target: "b", CredentialSet: "dockerhub"},
			env: testEnv(nil), code: CodeLoginServerMismatch, contains: "docker.io"},
		{desc: "login server matches case-insensitively", r: Rule{Name: "ghcr1", Source: "ghcr.io/a/b", Target: "b", CredentialSet: "GhcrCreds"},
			env: testEnv(nil)},
		{desc: "docker hub alias matches docker.io set", r: Rule{Name: "hub01", Source: "index.docker.io/library/a", Target: "a", CredentialSet: "dockerhub"},
			env: testEnv(nil)},
		{desc: "quota reached", r: rule("ghcr2", "ghcr.io/a/c", "c"),
			env: func() Env { e := testEnv(existing); e.MaxRules = 1; return e }(), code: CodeQuotaExceeded, contains: "limit"},
		{desc: "replace keeps target although repos exist", r: rule("hello", "mcr.microsoft.com/hello-world", "hello-world"),
			prev: &Rule{Name: "hello", Source: "mcr.microsoft.com/hello-world", Target: "hello-world"}, env: testEnv(nil, "hello-world")},
		{desc: "replace cannot change target", r: rule("hello", "mcr.microsoft.com/hello-world", "hello2"),
			prev: &Rule{Name: "hello", Source: "mcr.microsoft.com/hello-world", Target: "hello-world"}, env: testEnv(nil), code: CodePropertyChange},
		{desc: "replace checks the credential set", r: Rule{Name: "hello", Source: "quay.io/a/b", Target: "b", CredentialSet: "gone1"},
			prev: &Rule{Name: "hello", Source: "quay.io/a/b", Target: "b"}, env: testEnv(nil), code: CodeCredentialSetNotFound},
	} {
		r := tc.r
		err := Check(&r, tc.prev, tc.env)
		if codeOf(err) != tc.code {
			t.Errorf("%s: Check = %v, want code %q", tc.desc, err, tc.code)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.contains) {
			t.Errorf("%s: error %q does not contain %q", tc.desc, err, tc.contains)
		}
	}
}

func TestCheckDefaultLimitIs1000(t *testing.T) {
	others := make([]Rule, 0, DefaultMaxRules)
	for i := range DefaultMaxRules {
		others = append(others, rule(ruleName(i), "mcr.microsoft.com/r"+ruleName(i), "r"+ruleName(i)))
	}
	r := rule("onemore", "mcr.microsoft.com/onemore", "onemore")
	if err := Check(&r, nil, testEnv(others)); codeOf(err) != CodeQuotaExceeded {
		t.Fatalf("rule 1001: %v, want %s", err, CodeQuotaExceeded)
	}
	if err := Check(&r, nil, testEnv(others[1:])); err != nil {
		t.Fatalf("rule 1000: %v", err)
	}
}

func TestCheckLookupErrorsPropagate(t *testing.T) {
	boom := errors.New("disk on fire")
	env := testEnv(nil)
	env.RepositoryExists = func(string) (bool, error) { return false, boom }
	r := rule("hello", "mcr.microsoft.com/hello-world", "hello-world")
	if err := Check(&r, nil, env); !errors.Is(err, boom) {
		t.Fatalf("Check = %v, want wrapped %v", err, boom)
	}
}

func TestRulesUsing(t *testing.T) {
	rs := []Rule{
		{Name: "b-rule", CredentialSet: "Hub"},
		{Name: "a-rule", CredentialSet: "hub"},
		{Name: "c-rule", CredentialSet: "other"},
		{Name: "d-rule"},
	}
	got := RulesUsing("HUB", rs)
	if strings.Join(got, ",") != "a-rule,b-rule" {
		t.Fatalf("RulesUsing = %v", got)
	}
}

func ruleName(i int) string {
	const digits = "abcdefghij"
	s := []byte("rule")
	for _, c := range []int{i / 1000 % 10, i / 100 % 10, i / 10 % 10, i % 10} {
		s = append(s, digits[c])
	}
	return string(s)
}
