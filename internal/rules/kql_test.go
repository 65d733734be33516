package rules

import (
	"slices"
	"testing"
)

func TestParseTagQuery(t *testing.T) {
	for _, tc := range []struct {
		q       string
		ok      bool
		match   []string
		nomatch []string
	}{
		{q: "Tags", ok: true, match: []string{"latest", "1.0", ""}},
		{q: "Tags;", ok: true, match: []string{"latest"}},
		{q: "Tags | where Name startswith '2';", ok: true, match: []string{"2.54.0", "2"}, nomatch: []string{"12", "v2"}},
		{q: "Tags | where Name startswith 'v' and Name endswith '-alpine' and Name contains '3.' and Name == 'v3.1-alpine'",
			ok: true, match: []string{"v3.1-alpine"}, nomatch: []string{"v3.2-alpine", "v3.1-slim"}},
		{q: "Tags | where Name startswith 'V'", ok: true, match: []string{"v1"}, nomatch: []string{"1v"}},
		{q: "Tags | where Name startswith_cs 'V'", ok: true, match: []string{"V1"}, nomatch: []string{"v1"}},
		{q: "Tags | where Name == 'Latest'", ok: true, match: []string{"Latest"}, nomatch: []string{"latest"}},
		{q: "Tags | where Name =~ 'Latest'", ok: true, match: []string{"latest"}},
		{q: "Tags | where Name != 'latest'", ok: true, match: []string{"1.0"}, nomatch: []string{"latest"}},
		{q: "Tags | where Name !contains 'rc'", ok: true, match: []string{"1.0"}, nomatch: []string{"1.0-RC1"}},
		{q: "Tags | where Name endswith \"-slim\"", ok: true, match: []string{"3-slim"}},
		{q: `Tags | where Name contains 'it\'s'`, ok: true, match: []string{"it's-a-tag"}},
		{q: "Tags | Where Name == '1.0'", ok: true, match: []string{"1.0"}},
		{q: "Tags|where Name contains 'a'|where Name contains 'b'", ok: true, match: []string{"ab"}, nomatch: []string{"a"}},
		{q: "", ok: false},
		{q: "Images", ok: false},
		{q: "Tags | take 10", ok: false},
		{q: "Tags | where Name startswith 'a' or Name startswith 'b'", ok: false},
		{q: "Tags | where Size > 5", ok: false},
		{q: "Tags | where Name startswith", ok: false},
		{q: "Tags | where Name startswith 'unterminated", ok: false},
		{q: "Tags | where Name matches regex '.*'", ok: false},
		{q: "Tags | where Name == latest", ok: false},
		{q: "Tags | where", ok: false},
		{q: "Tags ; extra", ok: false},
		{q: "Tags | where Name == 'a' and", ok: false},
	} {
		f, err := ParseTagQuery(tc.q)
		if (err == nil) != tc.ok {
			t.Errorf("ParseTagQuery(%q) err = %v, want ok=%v", tc.q, err, tc.ok)
			continue
		}
		if err != nil {
			if codeOf(err) != CodeInvalidSync {
				t.Errorf("ParseTagQuery(%q): code %q", tc.q, codeOf(err))
			}
			continue
		}
		for _, tag := range tc.match {
			if !f.Match(tag) {
				t.Errorf("%q should match %q", tc.q, tag)
			}
		}
		for _, tag := range tc.nomatch {
			if f.Match(tag) {
				t.Errorf("%q should not match %q", tc.q, tag)
			}
		}
	}
}

func FuzzParseTagQuery(f *testing.F) {
	for _, s := range []string{
		"Tags",
		"Tags | where Name startswith '2';",
		"Tags | where Name startswith 'a' and Name endswith 'b' and Name contains 'c' and Name == 'd'",
		`Tags | where Name == "x\"y"`,
		"Tags | Where Name =~ 'A'",
		"Tags | where Name !startswith_cs '\\",
	} {
		f.Add(s, "latest")
	}
	f.Fuzz(func(t *testing.T, q, tag string) {
		flt, err := ParseTagQuery(q)
		if err != nil {
			return
		}
		flt.Match(tag)
	})
}

func TestSimpleTagFilterQuery(t *testing.T) {
	for _, tc := range []struct {
		f           SimpleTagFilter
		want        string
		match, miss string
	}{
		{SimpleTagFilter{}, "Tags", "anything", ""},
		{SimpleTagFilter{StartsWith: "v1."}, "Tags | where Name startswith 'v1.'", "v1.2", "v2.0"},
		{SimpleTagFilter{StartsWith: "v", EndsWith: "-alpine", Contains: "3", Equals: "v3-alpine"},
			"Tags | where Name startswith 'v' and Name endswith '-alpine' and Name contains '3' and Name == 'v3-alpine'", "v3-alpine", "v3-slim"},
	} {
		if got := tc.f.Query(); got != tc.want {
			t.Errorf("%+v.Query() = %q, want %q", tc.f, got, tc.want)
		}
		q, err := ParseTagQuery(tc.f.Query())
		if err != nil {
			t.Fatalf("ParseTagQuery(%q): %v", tc.f.Query(), err)
		}
		if !q.Match(tc.match) || (tc.miss != "" && q.Match(tc.miss)) {
			t.Errorf("%q: match %q = %v, miss %q = %v", tc.want, tc.match, q.Match(tc.match), tc.miss, q.Match(tc.miss))
		}
	}
}

// Simple gives back the conditions a SimpleTagFilter's Query was made
// from (and equivalent queries), and refuses what the conditions cannot
// say.
func TestTagFilterSimple(t *testing.T) {
	for _, tc := range []struct {
		q    string
		want SimpleTagFilter
		ok   bool
	}{
		{"Tags", SimpleTagFilter{}, true},
		{"Tags | where Name startswith 'v1.'", SimpleTagFilter{StartsWith: "v1."}, true},
		{"Tags | where Name startswith 'v' and Name endswith '-alpine' and Name contains '3' and Name == 'v3-alpine'",
			SimpleTagFilter{StartsWith: "v", EndsWith: "-alpine", Contains: "3", Equals: "v3-alpine"}, true},
		{`tags | Where Name Contains "x" and Name StartsWith 'y';`, SimpleTagFilter{StartsWith: "y", Contains: "x"}, true},
		{"Tags | where Name startswith 'a' | where Name endswith 'b'", SimpleTagFilter{StartsWith: "a", EndsWith: "b"}, true},
		{"Tags | where Name startswith 'a' and Name startswith 'b'", SimpleTagFilter{}, false},
		{"Tags | where Name !startswith 'a'", SimpleTagFilter{}, false},
		{"Tags | where Name startswith_cs 'a'", SimpleTagFilter{}, false},
		{"Tags | where Name =~ 'a'", SimpleTagFilter{}, false},
		{"Tags | where Name != 'a'", SimpleTagFilter{}, false},
		{"Tags | where Name startswith ''", SimpleTagFilter{}, false},
		{`Tags | where Name == "it's"`, SimpleTagFilter{}, false},
	} {
		f, err := ParseTagQuery(tc.q)
		if err != nil {
			t.Fatalf("ParseTagQuery(%q): %v", tc.q, err)
		}
		got, ok := f.Simple()
		if got != tc.want || ok != tc.ok {
			t.Errorf("Simple(%q) = %+v %v, want %+v %v", tc.q, got, ok, tc.want, tc.ok)
		}
		if ok {
			if back, err := ParseTagQuery(got.Query()); err != nil || !equalConds(back, f) {
				t.Errorf("%q: Query() of its conditions %q means something else (%v)", tc.q, got.Query(), err)
			}
		}
	}
}

// equalConds: the same conditions in any order.
func equalConds(a, b *TagFilter) bool {
	if len(a.conds) != len(b.conds) {
		return false
	}
	for _, c := range a.conds {
		if !slices.Contains(b.conds, c) {
			return false
		}
	}
	return true
}
