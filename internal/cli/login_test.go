package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A refused token says so: arca login, which was given the token, does
// not tell to pass one or to run arca login; other commands do.
func TestRefusedTokenHint(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantHas []string
		wantNot []string
	}{
		{name: "login --token bad", args: []string{"login", "--token", "wr0ng-t0ken"},
			wantHas: []string{"(AuthenticationFailed)", "the server refused this token; nothing was saved"},
			wantNot: []string{"run `arca login`", "ARCA_TOKEN"}},
		{name: "login with a bad ARCA_TOKEN", args: []string{"login"}, env: map[string]string{"ARCA_TOKEN": "wr0ng-t0ken"},
			wantHas: []string{"(AuthenticationFailed)", "the server refused this token; nothing was saved"},
			wantNot: []string{"run `arca login`"}},
		{name: "cache list --token bad", args: []string{"cache", "list", "-r", "MyRegistry", "--token", "wr0ng-t0ken"},
			wantHas: []string{"(AuthenticationFailed)", "(pass --token, set ARCA_TOKEN, or run `arca login`)"},
			wantNot: []string{"nothing was saved"}},
		{name: "show with a bad ARCA_TOKEN", args: []string{"show", "-n", "MyRegistry"}, env: map[string]string{"ARCA_TOKEN": "wr0ng-t0ken"},
			wantHas: []string{"(AuthenticationFailed)", "run `arca login`"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, url := newFakeARM(t)
			dir := t.TempDir()
			env := map[string]string{"ARCA_ENDPOINT": url, "ARCA_CONFIG_DIR": dir}
			for k, v := range tt.env {
				env[k] = v
			}
			r := runCLI(t, env, "", tt.args...)
			if r.err == nil {
				t.Fatalf("arca %s succeeded with a bad token", strings.Join(tt.args, " "))
			}
			msg := OneLine(r.err)
			for _, s := range tt.wantHas {
				if !strings.Contains(msg, s) {
					t.Errorf("error lacks %q: %s", s, msg)
				}
			}
			for _, s := range tt.wantNot {
				if strings.Contains(msg, s) {
					t.Errorf("error has %q: %s", s, msg)
				}
			}
			if strings.Contains(msg, "wr0ng-t0ken") {
				t.Errorf("error echoes the token: %s", msg)
			}
			if _, err := os.Stat(filepath.Join(dir, "login.json")); err == nil {
				t.Error("a refused token was saved")
			}
		})
	}
}
