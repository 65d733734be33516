package seedtest

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// toArgs turns a seed's command text into arca's argv: "az acr" becomes
// "arca", <placeholders> and $VARS are filled from vars, and the text is
// split as a POSIX shell would split it (quotes, backslash-newline and
// the "\ " the seeds' flattened line continuations leave behind).
func toArgs(text string, vars map[string]string) ([]string, error) {
	switch {
	case strings.HasPrefix(text, "az acr "):
		text = text[len("az acr "):]
	case strings.HasPrefix(text, "az identity "), strings.HasPrefix(text, "az role "):
		text = text[len("az "):] // arca identity, arca role, as az's
	default:
		return nil, fmt.Errorf("not an az acr, identity or role command: %q", text)
	}
	for k, v := range vars {
		if strings.HasPrefix(k, "<") {
			text = strings.ReplaceAll(text, k, v)
		}
	}
	if i := strings.IndexByte(text, '<'); i >= 0 {
		return nil, fmt.Errorf("unfilled placeholder in %q", text[i:])
	}
	return shellSplit(text, vars)
}

func shellSplit(s string, vars map[string]string) ([]string, error) {
	var (
		args   []string
		cur    strings.Builder
		inArg  bool
		quote  byte
		expand = func(i int) (string, int) { // $NAME at s[i]
			j := i + 1
			for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
				j++
			}
			return vars[s[i+1:j]], j
		}
	)
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case quote == '\'':
			if c == '\'' {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
			i++
		case quote == '"':
			switch c {
			case '"':
				quote = 0
				i++
			case '$':
				v, j := expand(i)
				cur.WriteString(v)
				i = j
			default:
				cur.WriteByte(c)
				i++
			}
		case c == '\'' || c == '"':
			quote, inArg = c, true
			i++
		case c == '\\' && i+1 < len(s) && (s[i+1] == '\n' || s[i+1] == ' '):
			i += 2 // line continuation (or its flattened "\ " form)
		case c == '$':
			v, j := expand(i)
			cur.WriteString(v)
			inArg, i = true, j
		case c == ' ' || c == '\t' || c == '\n':
			if inArg {
				args = append(args, cur.String())
				cur.Reset()
				inArg = false
			}
			i++
		default:
			cur.WriteByte(c)
			inArg = true
			i++
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

func TestShellSplit(t *testing.T) {
	vars := map[string]string{"IDENTITY_RESOURCE_ID": "/subscriptions/x/id", "<registry-name>": "myregistry"}
	tests := map[string]string{
		`az acr cache create \ -r MyRegistry \ -n MyRule \ -t myapp \ --identity "$IDENTITY_RESOURCE_ID"`: "cache|create|-r|MyRegistry|-n|MyRule|-t|myapp|--identity|/subscriptions/x/id",
		"az acr cache update -r <registry-name> -n r \\\n  --sync activesync":                             "cache|update|-r|myregistry|-n|r|--sync|activesync",
		`az acr credential-set show -n X \ -r R \ --query 'identity.principalId' \ -o tsv`:                "credential-set|show|-n|X|-r|R|--query|identity.principalId|-o|tsv",
	}
	for in, want := range tests {
		got, err := toArgs(in, vars)
		if err != nil || strings.Join(got, "|") != want {
			t.Errorf("toArgs(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := toArgs("az acr cache show -n <rule-name>", vars); err == nil {
		t.Error("unfilled placeholder accepted")
	}
}

// seedsDir finds ../shared/seeds next to the repository (where CI puts
// shared/), or /work/shared/seeds.
func seedsDir() string {
	wd, _ := os.Getwd()
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(filepath.Dir(dir), "shared", "seeds")
			if _, err := os.Stat(p); err == nil {
				return p
			}
			break
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	if _, err := os.Stat("/work/shared/seeds"); err == nil {
		return "/work/shared/seeds"
	}
	return ""
}

// seedCommandRe finds az acr cache / credential-set commands with
// arguments in the seeds (prose such as "az acr cache show command to
// show" has no dash after the verb).
var seedCommandRe = regexp.MustCompile(`az acr (?:[Cc]ache|credential-set) (?:create|update|show|list|delete|sync)\s+(?:\\ )?-`)

// occurrences counts where text appears in a seed as a whole command:
// followed by the end of the line, the ")" of a $( ), or the run-on
// "Run"/"Replace" the flattened pages glue after commands. This keeps a
// command from counting inside a longer one it is a prefix of.
func occurrences(seed, text string) int {
	n := 0
	for i := 0; ; {
		j := strings.Index(seed[i:], text)
		if j < 0 {
			return n
		}
		end := i + j + len(text)
		if end == len(seed) || strings.ContainsAny(seed[end:end+1], "\n)R") {
			n++
		}
		i = end
	}
}

// TestSeedCoverage proves the list in seeds_test.go is the seeds'
// commands, verbatim and complete: every listed text occurs in its seed
// as many times as it is listed, and no seed command is left out.
func TestSeedCoverage(t *testing.T) {
	dir := seedsDir()
	if dir == "" {
		t.Skip("shared/seeds not found beside the repository; the seed commands still run from the list in seeds_test.go")
	}
	listed := map[string]map[string]int{}
	for _, sd := range seedScripts("upstream.invalid:5000") {
		if listed[sd.file] == nil {
			listed[sd.file] = map[string]int{}
		}
		for _, st := range sd.steps {
			if st.seed != "" {
				listed[sd.file][st.seed]++
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		found := len(seedCommandRe.FindAllStringIndex(string(b), -1))
		total := 0
		for text, n := range listed[e.Name()] {
			if got := occurrences(string(b), text); got != n {
				t.Errorf("%s: %q occurs %d times as a command, listed %d times", e.Name(), text, got, n)
			}
			total += n
		}
		if total != found {
			t.Errorf("%s: %d commands in the seed, %d listed", e.Name(), found, total)
		}
	}
}
