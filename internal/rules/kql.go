package rules

import (
	"fmt"
	"strings"
	"unicode"
)

// TagFilter is a parsed tag query: the subset of KQL the az CLI generates
// for artifactSyncFilters.tags ("Tags", or "Tags | where" followed by
// conditions on Name joined by "and", optionally ending in ";").
type TagFilter struct {
	conds []tagCond
}

type tagCond struct {
	op    string // one of tagOps
	value string
}

// tagOps are the supported operators. As in KQL, startswith, endswith and
// contains (and =~) ignore case; the _cs forms and == / != do not.
var tagOps = map[string]bool{
	"startswith": true, "startswith_cs": true, "!startswith": true,
	"endswith": true, "endswith_cs": true, "!endswith": true,
	"contains": true, "contains_cs": true, "!contains": true,
	"==": true, "!=": true, "=~": true,
}

// ParseTagQuery parses q. "Tags" alone matches every tag.
func ParseTagQuery(q string) (*TagFilter, error) {
	toks, err := lexKQL(q)
	if err != nil {
		return nil, tagErr(q, err.Error())
	}
	p := &kqlParser{toks: toks}
	if !p.word("Tags") {
		return nil, tagErr(q, "the query must start with Tags")
	}
	f := &TagFilter{}
	for p.sym("|") {
		if !p.word("where") {
			return nil, tagErr(q, "only 'where' may follow '|'")
		}
		for {
			c, err := p.cond()
			if err != nil {
				return nil, tagErr(q, err.Error())
			}
			f.conds = append(f.conds, c)
			if !p.word("and") {
				break
			}
		}
	}
	p.sym(";")
	if !p.done() {
		return nil, tagErr(q, fmt.Sprintf("unexpected %q (supported: Name startswith|endswith|contains|==|!= '<text>' joined by and)", p.toks[p.i].text))
	}
	return f, nil
}

func tagErr(q, why string) error {
	return errorf(CodeInvalidSync, "artifactSyncFilters.tags.query %q: %s", q, why)
}

// Match reports whether tag passes every condition.
func (f *TagFilter) Match(tag string) bool {
	for _, c := range f.conds {
		if !c.match(tag) {
			return false
		}
	}
	return true
}

func (c tagCond) match(tag string) bool {
	lt, lv := strings.ToLower(tag), strings.ToLower(c.value)
	switch c.op {
	case "startswith":
		return strings.HasPrefix(lt, lv)
	case "startswith_cs":
		return strings.HasPrefix(tag, c.value)
	case "!startswith":
		return !strings.HasPrefix(lt, lv)
	case "endswith":
		return strings.HasSuffix(lt, lv)
	case "endswith_cs":
		return strings.HasSuffix(tag, c.value)
	case "!endswith":
		return !strings.HasSuffix(lt, lv)
	case "contains":
		return strings.Contains(lt, lv)
	case "contains_cs":
		return strings.Contains(tag, c.value)
	case "!contains":
		return !strings.Contains(lt, lv)
	case "==":
		return tag == c.value
	case "!=":
		return tag != c.value
	case "=~":
		return lt == lv
	}
	return false
}

type kqlTok struct {
	text string
	str  bool // a string literal (text is its value)
}

type kqlParser struct {
	toks []kqlTok
	i    int
}

func (p *kqlParser) done() bool { return p.i >= len(p.toks) }

// word consumes identifier w (case-insensitively: older CLIs wrote "Where").
func (p *kqlParser) word(w string) bool {
	if p.done() || p.toks[p.i].str || !strings.EqualFold(p.toks[p.i].text, w) {
		return false
	}
	p.i++
	return true
}

func (p *kqlParser) sym(s string) bool {
	if p.done() || p.toks[p.i].str || p.toks[p.i].text != s {
		return false
	}
	p.i++
	return true
}

func (p *kqlParser) cond() (tagCond, error) {
	if !p.word("Name") {
		return tagCond{}, fmt.Errorf("conditions must test Name")
	}
	if p.done() || p.toks[p.i].str {
		return tagCond{}, fmt.Errorf("expected an operator after Name")
	}
	op := strings.ToLower(p.toks[p.i].text)
	if !tagOps[op] {
		return tagCond{}, fmt.Errorf("unsupported operator %q", p.toks[p.i].text)
	}
	p.i++
	if p.done() || !p.toks[p.i].str {
		return tagCond{}, fmt.Errorf("expected a quoted string after %s", op)
	}
	v := p.toks[p.i].text
	p.i++
	return tagCond{op: op, value: v}, nil
}

// lexKQL splits q into identifiers/operators, string literals ('...' or
// "..." with backslash escapes), "|" and ";".
func lexKQL(q string) ([]kqlTok, error) {
	var toks []kqlTok
	rs := []rune(q)
	for i := 0; i < len(rs); {
		r := rs[i]
		switch {
		case unicode.IsSpace(r):
			i++
		case r == '|' || r == ';':
			toks = append(toks, kqlTok{text: string(r)})
			i++
		case r == '\'' || r == '"':
			s, n, err := lexString(rs[i:])
			if err != nil {
				return nil, err
			}
			toks = append(toks, kqlTok{text: s, str: true})
			i += n
		case r == '=' || r == '!':
			j := i + 1
			for j < len(rs) && (rs[j] == '=' || rs[j] == '~' || isWordRune(rs[j])) {
				j++
			}
			toks = append(toks, kqlTok{text: string(rs[i:j])})
			i = j
		case isWordRune(r):
			j := i
			for j < len(rs) && isWordRune(rs[j]) {
				j++
			}
			toks = append(toks, kqlTok{text: string(rs[i:j])})
			i = j
		default:
			return nil, fmt.Errorf("unexpected character %q", r)
		}
	}
	return toks, nil
}

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

// lexString reads a quoted literal at the start of rs; it returns the value
// and the number of runes consumed.
func lexString(rs []rune) (string, int, error) {
	quote := rs[0]
	var b strings.Builder
	for i := 1; i < len(rs); i++ {
		switch rs[i] {
		case '\\':
			if i+1 >= len(rs) {
				return "", 0, fmt.Errorf("unterminated string")
			}
			i++
			switch rs[i] {
			case 'n':
				b.WriteRune('\n')
			case 't':
				b.WriteRune('\t')
			default:
				b.WriteRune(rs[i])
			}
		case quote:
			return b.String(), i + 1, nil
		default:
			b.WriteRune(rs[i])
		}
	}
	return "", 0, fmt.Errorf("unterminated string")
}

// SimpleTagFilter is the tag filter as the CLI's --tag-starts-with,
// --tag-ends-with, --tag-contains and --tag-equals (and the portal's
// matching fields) give it; Query makes it into the KQL the API takes.
type SimpleTagFilter struct {
	StartsWith, EndsWith, Contains, Equals string
}

// IsZero reports whether no condition is set.
func (t SimpleTagFilter) IsZero() bool {
	return t.StartsWith == "" && t.EndsWith == "" && t.Contains == "" && t.Equals == ""
}

// Simple returns f as the conditions of a SimpleTagFilter, and whether
// it is one: each of startswith, endswith, contains and == at most once,
// with a value Query can write back (not empty, no quote), in any order.
// "Tags" alone is the zero filter. The portal's edit form shows such a
// filter in the fields the create form made it from.
func (f *TagFilter) Simple() (SimpleTagFilter, bool) {
	var s SimpleTagFilter
	for _, c := range f.conds {
		var field *string
		switch c.op {
		case "startswith":
			field = &s.StartsWith
		case "endswith":
			field = &s.EndsWith
		case "contains":
			field = &s.Contains
		case "==":
			field = &s.Equals
		default:
			return SimpleTagFilter{}, false
		}
		if *field != "" || c.value == "" || strings.ContainsRune(c.value, '\'') {
			return SimpleTagFilter{}, false
		}
		*field = c.value
	}
	return s, true
}

// Query builds the query the az extension sends: "Tags" alone, or
// "Tags | where " and the conditions joined by " and ", in the order
// startswith, endswith, contains, ==. Like the extension, it does not
// escape quotes; ParseTagQuery rejects what it cannot parse.
func (t SimpleTagFilter) Query() string {
	var conds []string
	for _, c := range []struct{ op, v string }{{"startswith", t.StartsWith}, {"endswith", t.EndsWith}, {"contains", t.Contains}, {"==", t.Equals}} {
		if c.v != "" {
			conds = append(conds, "Name "+c.op+" '"+c.v+"'")
		}
	}
	if len(conds) == 0 {
		return "Tags"
	}
	return "Tags | where " + strings.Join(conds, " and ")
}
