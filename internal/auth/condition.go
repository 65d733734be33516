package auth

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// Role assignment conditions (Azure ABAC, conditionVersion 2.0), the
// subset ACR's repository permissions use: a boolean expression of
//
//	ActionMatches{'Microsoft.ContainerRegistry/registries/repositories/content/read'}
//	@Request[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'backend/'
//
// joined with AND/&&, OR/|| and negated with !/NOT, with parentheses. The
// attribute may be written @Request[…] or @Resource[…]; the string
// operators are StringEquals, StringNotEquals, StringStartsWith,
// StringNotStartsWith (each also …IgnoreCase), StringLike and
// StringNotLike (with * wildcards). A condition is evaluated for each
// action the role would grant: the role grants it only where the
// condition is true. Anything else (other attributes, sub-operations,
// quantifiers, other operators) is refused when the assignment is made.

// ConditionVersion is the only condition language version accepted.
const ConditionVersion = "2.0"

// Limits keep a hostile condition cheap to parse and evaluate.
const (
	maxConditionLen   = 8 << 10
	maxConditionDepth = 32
)

// repoNameAttribute is the one attribute a condition may test.
const repoNameAttribute = "microsoft.containerregistry/registries/repositories:name"

// dataActionPrefix is the prefix of every ACR repository data action.
const dataActionPrefix = "microsoft.containerregistry/registries/repositories/"

// dataActions are the data actions each token action stands for.
var dataActions = map[Action][]string{
	Pull:          {dataActionPrefix + "content/read"},
	Push:          {dataActionPrefix + "content/write"},
	Delete:        {dataActionPrefix + "content/delete", dataActionPrefix + "metadata/delete"},
	MetadataRead:  {dataActionPrefix + "metadata/read"},
	MetadataWrite: {dataActionPrefix + "metadata/write"},
}

// Condition is a parsed role assignment condition.
type Condition struct {
	root condNode
}

// Allows reports whether the condition holds for action a on repo.
func (c *Condition) Allows(a Action, repo string) bool {
	return c == nil || c.root.eval(a, repo)
}

type condNode interface {
	eval(a Action, repo string) bool
}

type (
	condNot struct{ x condNode }
	condAnd struct{ l, r condNode }
	condOr  struct{ l, r condNode }
	// condAction is ActionMatches{pattern}: pattern is lower case and may
	// end in *.
	condAction struct{ pattern string }
	// condString compares the repository name with value.
	condString struct {
		op         string // equals, startswith, like
		negate     bool
		ignoreCase bool
		value      string
	}
)

func (n condNot) eval(a Action, repo string) bool { return !n.x.eval(a, repo) }
func (n condAnd) eval(a Action, repo string) bool { return n.l.eval(a, repo) && n.r.eval(a, repo) }
func (n condOr) eval(a Action, repo string) bool  { return n.l.eval(a, repo) || n.r.eval(a, repo) }

func (n condAction) eval(a Action, _ string) bool {
	for _, d := range dataActions[a] {
		if p, ok := strings.CutSuffix(n.pattern, "*"); ok && strings.HasPrefix(d, p) || d == n.pattern {
			return true
		}
	}
	return false
}

func (n condString) eval(_ Action, repo string) bool {
	v := n.value
	if n.ignoreCase {
		repo, v = strings.ToLower(repo), strings.ToLower(v)
	}
	var r bool
	switch n.op {
	case "equals":
		r = repo == v
	case "startswith":
		r = strings.HasPrefix(repo, v)
	case "like":
		r = globMatch(v, repo)
	}
	return r != n.negate
}

// globMatch matches s against p, where * stands for any run of
// characters (Azure's StringLike). Iterative, so no input backtracks
// exponentially.
func globMatch(p, s string) bool {
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case star >= 0:
			pi, mark = star+1, mark+1
			si = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// stringOperators are the supported operators, by lower-case name.
var stringOperators = map[string]condString{
	"stringequals":                  {op: "equals"},
	"stringequalsignorecase":        {op: "equals", ignoreCase: true},
	"stringnotequals":               {op: "equals", negate: true},
	"stringnotequalsignorecase":     {op: "equals", negate: true, ignoreCase: true},
	"stringstartswith":              {op: "startswith"},
	"stringstartswithignorecase":    {op: "startswith", ignoreCase: true},
	"stringnotstartswith":           {op: "startswith", negate: true},
	"stringnotstartswithignorecase": {op: "startswith", negate: true, ignoreCase: true},
	"stringlike":                    {op: "like"},
	"stringnotlike":                 {op: "like", negate: true},
}

// ConditionError is a condition arca cannot accept: a syntax error or a
// part of the language outside the supported subset. Pos is the byte
// offset it refers to.
type ConditionError struct {
	Pos int
	Msg string
}

func (e *ConditionError) Error() string {
	return fmt.Sprintf("condition: %s (at character %d)", e.Msg, e.Pos+1)
}

// ParseCondition parses a condition of the supported subset.
func ParseCondition(s string) (*Condition, error) {
	if len(s) > maxConditionLen {
		return nil, &ConditionError{Pos: maxConditionLen, Msg: fmt.Sprintf("longer than %d characters", maxConditionLen)}
	}
	p := &condParser{s: s}
	n, err := p.or(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i < len(p.s) {
		return nil, p.errorf("unexpected %q after the end of the expression", p.peekWord())
	}
	return &Condition{root: n}, nil
}

// ValidateCondition checks a role assignment's condition and version: an
// empty condition needs no version; a condition needs version 2.0 (the
// default when none is given).
func ValidateCondition(cond, version string) (*Condition, error) {
	if strings.TrimSpace(cond) == "" {
		if version != "" {
			return nil, errors.New("conditionVersion is set but there is no condition")
		}
		return nil, nil
	}
	if version != "" && version != ConditionVersion {
		return nil, fmt.Errorf("conditionVersion %q is not supported: use %s", version, ConditionVersion)
	}
	return ParseCondition(cond)
}

type condParser struct {
	s string
	i int
}

func (p *condParser) errorf(format string, args ...any) error {
	return &ConditionError{Pos: p.i, Msg: fmt.Sprintf(format, args...)}
}

func (p *condParser) space() {
	for p.i < len(p.s) && unicode.IsSpace(rune(p.s[p.i])) {
		p.i++
	}
}

// peekWord is the text at the cursor, for messages (at most 40 bytes).
func (p *condParser) peekWord() string {
	end := p.i
	for end < len(p.s) && end-p.i < 40 && !unicode.IsSpace(rune(p.s[end])) {
		end++
	}
	if end == p.i {
		return "end of input"
	}
	return p.s[p.i:end]
}

// keyword consumes w (ignoring case) when it stands at the cursor as a
// whole word (or is punctuation such as && and ||).
func (p *condParser) keyword(w string) bool {
	p.space()
	if len(p.s)-p.i < len(w) || !strings.EqualFold(p.s[p.i:p.i+len(w)], w) {
		return false
	}
	if isWordByte(w[len(w)-1]) && p.i+len(w) < len(p.s) && isWordByte(p.s[p.i+len(w)]) {
		return false
	}
	p.i += len(w)
	return true
}

func isWordByte(b byte) bool {
	return b == '_' || b == ':' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
}

func (p *condParser) or(depth int) (condNode, error) {
	l, err := p.and(depth)
	if err != nil {
		return nil, err
	}
	for p.keyword("OR") || p.keyword("||") {
		r, err := p.and(depth)
		if err != nil {
			return nil, err
		}
		l = condOr{l, r}
	}
	return l, nil
}

func (p *condParser) and(depth int) (condNode, error) {
	l, err := p.unary(depth)
	if err != nil {
		return nil, err
	}
	for p.keyword("AND") || p.keyword("&&") {
		r, err := p.unary(depth)
		if err != nil {
			return nil, err
		}
		l = condAnd{l, r}
	}
	return l, nil
}

func (p *condParser) unary(depth int) (condNode, error) {
	if depth > maxConditionDepth {
		return nil, p.errorf("nested deeper than %d levels", maxConditionDepth)
	}
	if p.keyword("!") || p.keyword("NOT") {
		x, err := p.unary(depth + 1)
		if err != nil {
			return nil, err
		}
		return condNot{x}, nil
	}
	return p.primary(depth)
}

func (p *condParser) primary(depth int) (condNode, error) {
	p.space()
	switch {
	case p.i >= len(p.s):
		return nil, p.errorf("expression expected, found the end of the condition")
	case p.s[p.i] == '(':
		p.i++
		n, err := p.or(depth + 1)
		if err != nil {
			return nil, err
		}
		if !p.keyword(")") {
			return nil, p.errorf("')' expected, found %q", p.peekWord())
		}
		return n, nil
	case p.keyword("ActionMatches"):
		return p.actionMatches()
	case p.s[p.i] == '@':
		return p.comparison()
	}
	w := p.peekWord()
	for _, unsupported := range []string{"SubOperationMatches", "ForAnyOfAnyValues", "ForAllOfAnyValues", "ForAnyOfAllValues", "ForAllOfAllValues", "Exists", "NotExists"} {
		if len(w) >= len(unsupported) && strings.EqualFold(w[:len(unsupported)], unsupported) {
			return nil, p.errorf("%s is not supported by arca (supported: ActionMatches and string comparisons of the repository name)", unsupported)
		}
	}
	return nil, p.errorf("expression expected, found %q", w)
}

// quoted reads a '…' string. Repository names and action names hold no
// quote, so there is no escaping.
func (p *condParser) quoted() (string, error) {
	p.space()
	if p.i >= len(p.s) || p.s[p.i] != '\'' {
		return "", p.errorf("a quoted string ('…') expected, found %q", p.peekWord())
	}
	end := strings.IndexByte(p.s[p.i+1:], '\'')
	if end < 0 {
		return "", p.errorf("unterminated string")
	}
	v := p.s[p.i+1 : p.i+1+end]
	p.i += end + 2
	return v, nil
}

func (p *condParser) actionMatches() (condNode, error) {
	if !p.keyword("{") {
		return nil, p.errorf("'{' expected after ActionMatches")
	}
	start := p.i
	v, err := p.quoted()
	if err != nil {
		return nil, err
	}
	if !p.keyword("}") {
		return nil, p.errorf("'}' expected: ActionMatches takes one action")
	}
	a := strings.ToLower(strings.TrimSpace(v))
	// An action no request has would make !ActionMatches{…} always true
	// and grant everything: a misspelt action is refused.
	n := condAction{pattern: a}
	for act := range dataActions {
		if n.eval(act, "") {
			return n, nil
		}
	}
	return nil, &ConditionError{Pos: start, Msg: fmt.Sprintf("action %q is not a Container Registry repository data action "+
		"(Microsoft.ContainerRegistry/registries/repositories/content/read|write|delete or metadata/read|write|delete, or a prefix ending in *)", v)}
}

func (p *condParser) comparison() (condNode, error) {
	start := p.i
	var source string
	switch {
	case p.keyword("@Request["):
		source = "Request"
	case p.keyword("@Resource["):
		source = "Resource"
	default:
		return nil, p.errorf("attribute %q is not supported: use @Request[Microsoft.ContainerRegistry/registries/repositories:name] or @Resource[…]", p.peekWord())
	}
	end := strings.IndexByte(p.s[p.i:], ']')
	if end < 0 {
		return nil, p.errorf("']' expected to close @%s[", source)
	}
	attr := strings.TrimSpace(p.s[p.i : p.i+end])
	if !strings.EqualFold(attr, repoNameAttribute) {
		return nil, &ConditionError{Pos: start, Msg: fmt.Sprintf("attribute @%s[%s] is not supported: the only attribute is Microsoft.ContainerRegistry/registries/repositories:name", source, attr)}
	}
	p.i += end + 1
	p.space()
	opStart := p.i
	for p.i < len(p.s) && isWordByte(p.s[p.i]) {
		p.i++
	}
	opName := p.s[opStart:p.i]
	op, ok := stringOperators[strings.ToLower(opName)]
	if !ok {
		return nil, &ConditionError{Pos: opStart, Msg: fmt.Sprintf("operator %q is not supported (supported: StringEquals, StringNotEquals, StringStartsWith, StringNotStartsWith, each with IgnoreCase, StringLike, StringNotLike)", opName)}
	}
	p.space()
	if p.i < len(p.s) && p.s[p.i] == '{' {
		return nil, p.errorf("a set of values is not supported: compare with one quoted value, and join several comparisons with OR")
	}
	v, err := p.quoted()
	if err != nil {
		return nil, err
	}
	op.value = v
	return op, nil
}
