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
