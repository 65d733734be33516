package auth

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Scope is one Docker token scope, "type:name:action[,action...]", e.g.
// repository:team/app:pull,push or registry:catalog:*.
type Scope struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (s Scope) String() string {
	return s.Type + ":" + s.Name + ":" + strings.Join(s.Actions, ",")
}

var (
	scopeTypeRe   = regexp.MustCompile(`^[a-z0-9]+(\([a-z0-9]+\))?$`)
	scopeActionRe = regexp.MustCompile(`^([a-z_]*|\*)$`)
)

// maxScopes bounds the scopes of one token request.
const maxScopes = 64

// ParseScopes parses scope parameters: each value may hold several
// space-separated scopes (the OAuth2 form), and the parameter may repeat
// (the GET form). The name may hold one ":" (a host:port prefix), so the
// type is the first field and the actions the last.
func ParseScopes(values []string) ([]Scope, error) {
	var out []Scope
	for _, v := range values {
		for _, f := range strings.Fields(v) {
			if len(out) == maxScopes {
				return nil, fmt.Errorf("more than %d scopes", maxScopes)
			}
			s, err := parseScope(f)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	return out, nil
}

func parseScope(f string) (Scope, error) {
	typ, rest, ok := strings.Cut(f, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i <= 0 {
		return Scope{}, fmt.Errorf("scope %q: want type:name:actions", f)
	}
	name, acts := rest[:i], rest[i+1:]
	if !scopeTypeRe.MatchString(typ) || strings.Count(name, ":") > 1 {
		return Scope{}, fmt.Errorf("scope %q: invalid type or name", f)
	}
	// A deprecated "(class)" suffix on the type carries nothing we use.
	typ, _, _ = strings.Cut(typ, "(")
	s := Scope{Type: typ, Name: name}
	for _, a := range strings.Split(acts, ",") {
		if !scopeActionRe.MatchString(a) {
			return Scope{}, fmt.Errorf("scope %q: invalid action %q", f, a)
		}
		if a != "" && !slices.Contains(s.Actions, a) {
			s.Actions = append(s.Actions, a)
		}
	}
	return s, nil
}
