package cli

import (
	"strings"
	"testing"
)

// az's global arguments work on every command: --subscription goes into
// the resource ids the CLI builds, --only-show-errors drops warnings,
// --verbose and --debug log each management call on stderr (never the
// token).
func TestGlobalArguments(t *testing.T) {
	const other = "99999999-8888-7777-6666-555555555555"
	tests := []struct {
		name       string
		args       []string
		wantErr    bool
		wantPath   string   // a request path that must have been sent
		stderrHas  []string // substrings of stderr
		stderrNot  []string // not in stderr
		emptyStdEr bool
	}{
		{name: "--subscription of the server", args: []string{"cache", "list", "-r", "MyRegistry", "--subscription", fakeSub},
			wantPath: "/subscriptions/" + fakeSub + "/resourceGroups/arca/"},
		{name: "--subscription goes into the ids", args: []string{"credential-set", "show", "-r", "MyRegistry", "-n", "x", "--subscription", other},
			wantErr: true, wantPath: "/subscriptions/" + other + "/resourceGroups/arca/providers/Microsoft.ContainerRegistry/registries/myregistry/credentialSets/x"},
		{name: "--subscription before the command", args: []string{"--subscription", other, "show", "-n", "MyRegistry"},
			wantErr: true, wantPath: "/subscriptions/" + other + "/resourceGroups/arca/"},
		{name: "warning without --only-show-errors", args: []string{"cache", "create", "-r", "MyRegistry", "-n", "r1", "-s", "quay.io/org/app", "-t", "app", "--platforms", "linux/amd64"},
			stderrHas: []string{"WARNING: Artifact sync filters are ignored"}},
		{name: "--only-show-errors drops the warning", args: []string{"cache", "create", "-r", "MyRegistry", "-n", "r1", "-s", "quay.io/org/app", "-t", "app", "--platforms", "linux/amd64", "--only-show-errors"},
			emptyStdEr: true},
		{name: "--only-show-errors keeps the error", args: []string{"cache", "show", "-r", "MyRegistry", "-n", "missing", "--only-show-errors"},
			wantErr: true},
		{name: "--verbose logs method, URL and status", args: []string{"--verbose", "cache", "list", "-r", "MyRegistry"},
			stderrHas: []string{"verbose: > GET /arca/v1/info", "verbose: > GET /subscriptions/" + fakeSub + "/", "/cacheRules?api-version=", "verbose: < 200 OK"},
			stderrNot: []string{"Authorization", "test-admin-token", "debug:"}},
		{name: "--debug adds headers, redacted", args: []string{"credential-set", "list", "-r", "MyRegistry", "--debug"},
			stderrHas: []string{"debug: > GET /arca/v1/info", "debug: > Authorization: Bearer REDACTED", "debug: < 200 OK"},
			stderrNot: []string{"test-admin-token"}},
		{name: "--verbose on a failing call", args: []string{"cache", "show", "-r", "MyRegistry", "-n", "missing", "--verbose"},
			wantErr: true, stderrHas: []string{"verbose: < 404 Not Found"}},
		{name: "commands without a server accept them", args: []string{"version", "--subscription", other, "--only-show-errors", "--verbose", "--debug"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, url := newFakeARM(t)
			r := runCLI(t, cliEnv(t, url), "", tt.args...)
			if (r.err != nil) != tt.wantErr {
				t.Fatalf("arca %s: err %v, want error %v\nstderr: %s", strings.Join(tt.args, " "), r.err, tt.wantErr, r.stderr)
			}
			stderr := strings.ReplaceAll(r.stderr, url, "")
			for _, s := range tt.stderrHas {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			for _, s := range tt.stderrNot {
				if strings.Contains(stderr, s) || strings.Contains(r.stdout, s) {
					t.Errorf("output has %q:\n%s", s, stderr)
				}
			}
			if tt.emptyStdEr && r.stderr != "" {
				t.Errorf("stderr not empty:\n%s", r.stderr)
			}
			if tt.wantPath != "" {
				found := false
				for _, q := range f.requests() {
					found = found || strings.HasPrefix(q.Path, tt.wantPath)
				}
				if !found {
					t.Errorf("no request to %s; sent %v", tt.wantPath, f.requests())
				}
			}
		})
	}
}
