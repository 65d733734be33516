package cli

import (
	"os/exec"
	"strings"
	"testing"
)

// Every example of `arca --help` names a command that exists with flags
// it takes, so the examples cannot drift from the commands.
func TestRootExamplesParse(t *testing.T) {
	root := NewRootCmd(Env{Getenv: func(string) string { return "" }})
	root.InitDefaultCompletionCmd() // cobra adds it at Execute
	n := 0
	for _, line := range strings.Split(rootExamples, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if cmdLine, _, found := strings.Cut(line, " > "); found {
			line = cmdLine // a shell redirection
		}
		args := strings.Fields(line)
		if args[0] != "arca" {
			t.Errorf("example %q does not start with arca", line)
			continue
		}
		for i := range args {
			args[i] = strings.Trim(args[i], `"`)
		}
		cmd, rest, err := root.Find(args[1:])
		if err != nil || cmd == root {
			t.Errorf("example %q: no such command (%v)", line, err)
			continue
		}
		if err := cmd.ParseFlags(rest); err != nil {
			t.Errorf("example %q: %v", line, err)
		}
		n++
	}
	if n < 10 {
		t.Errorf("only %d examples", n)
	}
}

// arca completion bash|zsh|fish writes scripts the shells accept, and
// completion knows the subcommands.
func TestCompletion(t *testing.T) {
	env := map[string]string{"ARCA_CONFIG_DIR": t.TempDir()}
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := runCLI(t, env, "", "completion", sh)
		if r.err != nil || !strings.Contains(r.stdout, "arca") {
			t.Fatalf("arca completion %s: %v\n%s", sh, r.err, r.stderr)
		}
		if sh != "bash" {
			continue
		}
		if _, err := exec.LookPath("bash"); err != nil {
			t.Fatal("bash not found")
		}
		script := writeFile(t, r.stdout)
		out, err := exec.Command("bash", "-c", `source "$1" && complete -p arca`, "bash", script).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "arca") {
			t.Errorf("bash does not load the completion script: %v\n%s", err, out)
		}
	}
	r := runCLI(t, env, "", "__complete", "cache", "cr")
	if !strings.Contains(r.stdout, "create") {
		t.Errorf("completing `arca cache cr`: %q, want create", r.stdout)
	}
	r = runCLI(t, env, "", "__complete", "")
	for _, want := range []string{"serve", "backup", "restore", "doctor", "completion"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("completing `arca `: %q lacks %s", r.stdout, want)
		}
	}
}

// An unknown subcommand of a command group fails (exit 1, one line
// naming it), with or without flags after it; a group alone prints its
// help. Cobra printed the help and exited 0 for `arca cache lst`, and
// blamed the flag for `arca cache lst -r R`.
func TestUnknownSubcommand(t *testing.T) {
	env := map[string]string{"ARCA_CONFIG_DIR": t.TempDir()}
	for _, tc := range []struct {
		args []string
		err  string // "" = help on stdout, no error
	}{
		{[]string{"cache", "lst"}, `unknown command "lst" for "arca cache"; did you mean "list"?`},
		{[]string{"cache", "lst", "-r", "MyRegistry", "-o", "table"}, `unknown command "lst" for "arca cache"; did you mean "list"?`},
		{[]string{"Cache", "shwo", "-n", "x"}, `unknown command "shwo" for "arca cache"; did you mean "show"?`},
		{[]string{"token", "credential", "generat", "-r", "x"}, `unknown command "generat" for "arca token credential"; did you mean "generate"?`},
		{[]string{"credential-set", "frobnicate"}, `unknown command "frobnicate" for "arca credential-set" (see arca credential-set --help)`},
		{[]string{"cache"}, ""},
		{[]string{"token", "credential"}, ""},
	} {
		res := runCLI(t, env, "", tc.args...)
		if tc.err == "" {
			if res.err != nil || !strings.Contains(res.stdout, "Available Commands:") {
				t.Errorf("%v: err %v, stdout %q; want the group's help", tc.args, res.err, res.stdout)
			}
			continue
		}
		if res.err == nil || !strings.Contains(res.err.Error(), tc.err) || ExitCode(res.err) != 1 || strings.Contains(OneLine(res.err), "\n") {
			t.Errorf("%v: err %v (exit %d), want one line with %q", tc.args, res.err, ExitCode(res.err), tc.err)
		}
	}
}
