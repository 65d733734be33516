package auth

import (
	"errors"
	"strings"
	"testing"
)

// The conditions of ACR's ABAC documentation (and variants): which
// (action, repository) pairs they allow.
func TestConditionEval(t *testing.T) {
	const (
		read     = "'Microsoft.ContainerRegistry/registries/repositories/content/read'"
		metaRead = "'Microsoft.ContainerRegistry/registries/repositories/metadata/read'"
		attr     = "@Request[Microsoft.ContainerRegistry/registries/repositories:name]"
	)
	exact := "((!(ActionMatches{" + read + "}) AND !(ActionMatches{" + metaRead + "})) OR (" + attr + " StringEqualsIgnoreCase 'hello-world'))"
	type pair struct {
		a    Action
		repo string
		want bool
	}
	tests := []struct {
		desc, cond string
		cases      []pair
	}{
		{"exact repository (docs)", exact, []pair{
			{Pull, "hello-world", true}, {MetadataRead, "hello-world", true}, {Pull, "hello-world2", false},
			{Pull, "other", false}, {MetadataRead, "other", false},
			// Actions the condition does not name are not restricted by it.
			{Push, "other", true},
		}},
		{"prefix, trailing slash", "@Resource[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team-a/'", []pair{
			{Pull, "team-a/app", true}, {Push, "team-a/x/y", true}, {Pull, "team-a-infra", false}, {Pull, "team-a", false},
		}},
		{"several prefixes with OR, case-insensitive keywords", attr + " stringstartswithignorecase 'backend/' or " + attr + " STRINGSTARTSWITHIGNORECASE 'frontend/' || " + attr + " StringEquals 'shared'", []pair{
			{Pull, "backend/api", true}, {Pull, "frontend/web", true}, {Pull, "shared", true}, {Pull, "shared/x", false}, {Pull, "ops/x", false},
		}},
		{"case-sensitive comparison", attr + " StringEquals 'App'", []pair{{Pull, "app", false}}},
		{"ignore case", attr + " StringEqualsIgnoreCase 'App'", []pair{{Pull, "app", true}}},
		{"negations and &&", "!(" + attr + " StringStartsWith 'secret/') && " + attr + " StringNotEquals 'ops'", []pair{
			{Pull, "app", true}, {Pull, "secret/x", false}, {Pull, "ops", false},
		}},
		{"NOT keyword and not-starts-with", "NOT (" + attr + " StringNotStartsWithIgnoreCase 'A/')", []pair{{Pull, "a/b", true}, {Pull, "b", false}}},
		{"like", attr + " StringLike 'team-*/app*'", []pair{{Pull, "team-x/app", true}, {Pull, "team-/app-2", true}, {Pull, "team/app", false}}},
		{"not like", attr + " StringNotLike '*test*'", []pair{{Pull, "app", true}, {Pull, "my/test/app", false}}},
		{"action wildcard", "!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/*'}) OR " + attr + " StringEquals 'a'", []pair{
			{Pull, "b", false}, {Push, "b", false}, {Delete, "b", false}, {MetadataRead, "b", true}, {Pull, "a", true},
		}},
		{"metadata/delete is a delete", "ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/metadata/delete'}", []pair{
			{Delete, "x", true}, {Pull, "x", false},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.desc, func(t *testing.T) {
			c, err := ParseCondition(tc.cond)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tc.cases {
				if got := c.Allows(p.a, p.repo); got != p.want {
					t.Errorf("%s on %s: %v, want %v", p.a, p.repo, got, p.want)
				}
			}
		})
	}
}

// Outside the subset or malformed: refused with a message saying what.
func TestConditionErrors(t *testing.T) {
	const attr = "@Request[Microsoft.ContainerRegistry/registries/repositories:name]"
	tests := []struct{ cond, want string }{
		{"", "expression expected"},
		{"(", "expression expected"},
		{"(" + attr + " StringEquals 'a'", "')' expected"},
		{attr + " StringEquals 'a' extra", `unexpected "extra"`},
		{attr + " StringEquals 'a", "unterminated string"},
		{attr + " StringEquals a", "quoted string"},
		{attr + " NumericEquals '1'", `operator "NumericEquals" is not supported`},
		{attr + " StringEquals {'a', 'b'}", "a set of values is not supported"},
		{"@Principal[Microsoft.Directory/CustomSecurityAttributes/Id:Engineering_Project] StringEquals 'x'", "@Principal"},
		{"@Resource[Microsoft.Storage/storageAccounts/blobServices/containers:name] StringEquals 'x'", "is not supported: the only attribute is"},
		{"@Environment[UtcNow] StringEquals 'x'", "@Environment"},
		{"SubOperationMatches{'Blob.List'}", "SubOperationMatches is not supported"},
		{"ForAnyOfAnyValues:StringEquals {'a'}", "ForAnyOfAnyValues is not supported"},
		{"Exists @Request[x]", "Exists is not supported"},
		{"ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'}", "is not a Container Registry repository data action"},
		{"!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/raed'})", "is not a Container Registry repository data action"},
		{"ActionMatches{'a', 'b'}", "'}' expected"},
		{"ActionMatches 'x'", "'{' expected"},
		{attr + " StringEquals 'a' AND", "expression expected, found the end"},
		{strings.Repeat("(", 40) + attr + " StringEquals 'a'" + strings.Repeat(")", 40), "nested deeper than"},
		{strings.Repeat("!", 40) + attr + " StringEquals 'a'", "nested deeper than"},
		{strings.Repeat(" ", 9000), "longer than"},
		{"ORx", "expression expected"},
	}
	for _, tc := range tests {
		_, err := ParseCondition(tc.cond)
		var ce *ConditionError
		if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%.60q: %v, want a ConditionError containing %q", tc.cond, err, tc.want)
		}
	}
}

func TestValidateCondition(t *testing.T) {
	const cond = "@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringEquals 'a'"
	for _, tc := range []struct {
		cond, version string
		ok            bool
	}{
		{"", "", true}, {cond, "", true}, {cond, "2.0", true}, {cond, "1.0", false}, {"", "2.0", false}, {"  ", "", true},
	} {
		c, err := ValidateCondition(tc.cond, tc.version)
		if (err == nil) != tc.ok || (err == nil && (c == nil) != (strings.TrimSpace(tc.cond) == "")) {
			t.Errorf("(%q, %q): %v, %v", tc.cond, tc.version, c, err)
		}
	}
}

// A condition restricts a role's rule: matching rules still add up, and a
// rule without a condition is unrestricted.
func TestPermsWithCondition(t *testing.T) {
	c, err := ParseCondition("@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWith 'team-a/'")
	if err != nil {
		t.Fatal(err)
	}
	p := Perms{{Pattern: "*", Actions: []Action{Pull, MetadataRead}, Cond: c}}
	if !p.Allows("team-a/app", Pull) || p.Allows("team-b/app", Pull) || p.Allows("team-a/app", Push) {
		t.Fatal("conditioned rule")
	}
	p = append(p, Rule{Pattern: "team-b/app", Actions: []Action{Pull}})
	if !p.Allows("team-b/app", Pull) || p.Allows("team-c/app", Pull) {
		t.Fatal("rules add up")
	}
}

func FuzzParseCondition(f *testing.F) {
	for _, s := range []string{
		"((!(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'}) AND !(ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/metadata/read'})) OR (@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringEqualsIgnoreCase 'hello-world'))",
		"@Resource[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team-a/'",
		"@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringLike '*a*b*' || NOT @Request[Microsoft.ContainerRegistry/registries/repositories:name] StringNotEquals 'x'",
		"ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/*'}",
		"(((", "'", "@Request[", "!",
	} {
		f.Add(s, "team-a/app")
	}
	f.Fuzz(func(t *testing.T, cond, repo string) {
		c, err := ParseCondition(cond)
		if err != nil {
			var ce *ConditionError
			if !errors.As(err, &ce) || ce.Pos < 0 || ce.Pos > len(cond) {
				t.Fatalf("%q: error %v with position out of range", cond, err)
			}
			return
		}
		// Negating what parses evaluates to the opposite, for every action
		// (unless the extra level goes past the depth limit).
		neg, err := ParseCondition("!(" + cond + ")")
		if err != nil {
			if !strings.Contains(err.Error(), "nested deeper") && !strings.Contains(err.Error(), "longer than") {
				t.Fatalf("%q parses but its negation does not: %v", cond, err)
			}
			return
		}
		for _, a := range AllActions {
			if neg.Allows(a, repo) == c.Allows(a, repo) {
				t.Fatalf("%q on %s %q: negation evaluates the same", cond, a, repo)
			}
		}
	})
}
