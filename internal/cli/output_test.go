package cli

import (
	"bytes"
	"strings"
	"testing"

	jmespath "github.com/jmespath-community/go-jmespath"
	"github.com/spf13/cobra"
)

// --query as az reads it, on a list of rules: -o tsv prints the result.
func TestQueryAsAz(t *testing.T) {
	rules := []any{
		map[string]any{"name": "MyRule", "sourceRepository": "docker.io/library/ubuntu", "syncMode": "PassiveSync", "n": 1.0},
		map[string]any{"name": "other", "sourceRepository": "ghcr.io/a/b", "syncMode": "ActiveSync", "n": 2.0},
	}
	for _, tc := range []struct {
		query, want, err string
	}{
		{query: "[?name=='MyRule'].sourceRepository", want: "docker.io/library/ubuntu\n"},
		{query: "[?name==`\"MyRule\"`].sourceRepository", want: "docker.io/library/ubuntu\n"},
		// az (Python jmespath) reads a backtick literal that is not JSON as a string.
		{query: "[?name==`MyRule`].sourceRepository", want: "docker.io/library/ubuntu\n"},
		{query: "[?syncMode==` ActiveSync`].name", want: "other\n"},
		{query: "[?n==`2`].name", want: "other\n"},
		{query: "[?name=='`MyRule`'].name", want: ""},
		{query: "[?\"name\"==`MyRule`].name", want: "MyRule\n"},
		{query: "[].{n:name, s:sourceRepository}", want: "MyRule\tdocker.io/library/ubuntu\nother\tghcr.io/a/b\n"},
		{query: "[0.name", err: "invalid jmespath query"},
		{query: "[?name==`MyRule].name", err: "invalid jmespath query"},
	} {
		var out bytes.Buffer
		p, err := newPrinter(&out, "tsv", tc.query)
		if err == nil {
			err = p.print(rules)
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("--query %s: error %v, want %q", tc.query, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("--query %s: %v", tc.query, err)
			continue
		}
		if out.String() != tc.want {
			t.Errorf("--query %s: printed %q, want %q", tc.query, out.String(), tc.want)
		}
	}
}

// FuzzAzLiterals: any query is rewritten without a panic; one without
// backticks is unchanged, and a query that compiled before the rewrite
// still compiles.
func FuzzAzLiterals(f *testing.F) {
	for _, s := range []string{"[?name==`MyRule`].name", "[?a==`\"x\"`]", "'a`b'", "\"a\\\"`\"", "`a\\`b`", "`", "`{\"a\": 1}`", "[?x==` 1`]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, q string) {
		r := azLiterals(q)
		if !strings.Contains(q, "`") && r != q {
			t.Fatalf("azLiterals(%q) = %q, want it unchanged", q, r)
		}
		if _, err := jmespath.Compile(q); err == nil {
			if _, err := jmespath.Compile(r); err != nil {
				t.Fatalf("%q compiles but its rewrite %q does not: %v", q, r, err)
			}
		}
	})
}

// The -o help lists exactly what -o accepts, on every command that has it.
func TestOutputHelpIsTrue(t *testing.T) {
	const wantUsage = "output format: json, jsonc, table, tsv, yaml, yamlc or none"
	var walk func(c *cobra.Command)
	seen := 0
	walk = func(c *cobra.Command) {
		if f := c.Flags().Lookup("output"); f != nil {
			seen++
			if f.Usage != wantUsage {
				t.Errorf("%s -o help: %q, want %q", c.CommandPath(), f.Usage, wantUsage)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	root := NewRootCmd(Env{Getenv: func(string) string { return "" }})
	walk(root)
	if seen == 0 {
		t.Fatal("no command has -o")
	}
	listed := strings.Split(strings.NewReplacer("output format: ", "", " or ", ", ").Replace(wantUsage), ", ")
	for _, format := range listed {
		t.Run(format, func(t *testing.T) {
			_, url := newFakeARM(t)
			if r := runCLI(t, cliEnv(t, url), "", "cache", "list", "-r", "MyRegistry", "-o", format); r.err != nil {
				t.Errorf("-o %s (listed in the help) is refused: %v", format, r.err)
			}
		})
	}
	_, url := newFakeARM(t)
	if r := runCLI(t, cliEnv(t, url), "", "cache", "list", "-r", "MyRegistry", "-o", "xml"); r.err == nil {
		t.Error("-o xml (not listed) is accepted")
	}
}
