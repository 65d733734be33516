// Package auth is arca's data-plane access control: who a request is (the
// registry's admin user, a token with a scope map, a bearer access token
// arca issued, or nobody) and what it may do on which repository. The
// registry asks one question per request (Authorizer.Authorize); the token
// endpoint (/oauth2/token) turns passwords and refresh tokens into
// short-lived JWT access tokens, as Docker's token protocol and ACR's
// OAuth2 endpoints do.
package auth

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/arcacache/arca/internal/oci"
)

// Action is one thing a caller may do on a repository. The values are the
// Docker token protocol's action names, as they appear in JWT access claims.
type Action string

// Repository actions.
const (
	Pull          Action = "pull"           // content/read
	Push          Action = "push"           // content/write
	Delete        Action = "delete"         // content/delete
	MetadataRead  Action = "metadata_read"  // metadata/read
	MetadataWrite Action = "metadata_write" // metadata/write
)

// scopeMapActions maps ACR scope-map action names to token actions.
var scopeMapActions = map[string]Action{
	"content/read":   Pull,
	"content/write":  Push,
	"content/delete": Delete,
	"metadata/read":  MetadataRead,
	"metadata/write": MetadataWrite,
}

// AllActions are every repository action, in a stable order.
var AllActions = []Action{Pull, Push, Delete, MetadataRead, MetadataWrite}

// ScopeMapActionNames lists the valid scope-map actions (for messages).
func ScopeMapActionNames() []string {
	out := make([]string, 0, len(scopeMapActions))
	for k := range scopeMapActions {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Rule grants actions on the repositories a pattern matches: an exact
// name, a prefix ending in "/*" (every repository under it, at any depth,
// existing or not), or "*" (the whole registry).
type Rule struct {
	Pattern string
	Actions []Action
	// Cond, when set, limits the rule to the (action, repository) pairs
	// it allows: a role assignment's ABAC condition.
	Cond *Condition
}

func (r Rule) matches(repo string) bool {
	switch {
	case r.Pattern == "*":
		return true
	case strings.HasSuffix(r.Pattern, "/*"):
		return strings.HasPrefix(repo, r.Pattern[:len(r.Pattern)-1])
	}
	return r.Pattern == repo
}

// Perms is a set of rules; matching rules add up, as in ACR scope maps.
type Perms []Rule

// AllPerms allows everything on every repository (admin user, open mode).
var AllPerms = Perms{{Pattern: "*", Actions: AllActions}}

// Allows reports whether a is allowed on repo.
func (p Perms) Allows(repo string, a Action) bool {
	for _, r := range p {
		if slices.Contains(r.Actions, a) && r.matches(repo) && r.Cond.Allows(a, repo) {
			return true
		}
	}
	return false
}

// Granted returns the subset of want allowed on repo.
func (p Perms) Granted(repo string, want []Action) []Action {
	var out []Action
	for _, a := range want {
		if p.Allows(repo, a) && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// ParseScopeMapActions parses ACR scope-map actions such as
// "repositories/team/*/content/read" into rules, one per action string.
// Repository and action are lower-cased, as az does.
func ParseScopeMapActions(actions []string) (Perms, error) {
	if len(actions) == 0 {
		return nil, errors.New("at least one action is required")
	}
	var p Perms
	for _, s := range actions {
		r, err := parseScopeMapAction(s)
		if err != nil {
			return nil, err
		}
		p = append(p, r)
	}
	return p, nil
}

func parseScopeMapAction(s string) (Rule, error) {
	ls := strings.ToLower(strings.TrimSpace(s))
	rest, ok := strings.CutPrefix(ls, "repositories/")
	if !ok {
		if strings.HasPrefix(ls, "gateway/") {
			return Rule{}, fmt.Errorf("action %q: connected-registry gateway actions are not supported", s)
		}
		return Rule{}, fmt.Errorf("action %q: want repositories/<repository>/<action>", s)
	}
	for name, a := range scopeMapActions {
		if repo, ok := strings.CutSuffix(rest, "/"+name); ok {
			if err := ValidRepositoryPattern(repo); err != nil {
				return Rule{}, fmt.Errorf("action %q: %w", s, err)
			}
			return Rule{Pattern: repo, Actions: []Action{a}}, nil
		}
	}
	return Rule{}, fmt.Errorf("action %q: invalid action; valid actions are %s", s, strings.Join(ScopeMapActionNames(), ", "))
}

// ValidRepositoryPattern accepts a repository name, "prefix/*" or "*"; a
// wildcard anywhere else (sample/*/teamA, sample/teamA*) is invalid, as in ACR.
func ValidRepositoryPattern(p string) error {
	if p == "*" {
		return nil
	}
	name := strings.TrimSuffix(p, "/*")
	if !oci.ValidRepository(name) {
		return fmt.Errorf("repository %q: want a repository name, name/* or *", p)
	}
	return nil
}

// ScopeMapAction formats one scope-map action string.
func ScopeMapAction(repo, action string) string {
	return "repositories/" + strings.ToLower(repo) + "/" + strings.ToLower(action)
}

// System scope maps: built in, read-only, covering every repository.
const (
	ScopeMapPull  = "_repositories_pull"
	ScopeMapPush  = "_repositories_push"
	ScopeMapAdmin = "_repositories_admin"
)

// SystemScopeMap is a built-in scope map.
type SystemScopeMap struct {
	Name        string
	Description string
	Actions     []string
}

// SystemScopeMaps are the built-in scope maps, in ACR's order.
var SystemScopeMaps = []SystemScopeMap{
	{ScopeMapAdmin, "Can perform all read, write and delete operations on the registry",
		[]string{"repositories/*/metadata/read", "repositories/*/metadata/write", "repositories/*/content/read", "repositories/*/content/write", "repositories/*/content/delete"}},
	{ScopeMapPull, "Can pull any repository of the registry",
		[]string{"repositories/*/content/read", "repositories/*/metadata/read"}},
	{ScopeMapPush, "Can push to any repository of the registry",
		[]string{"repositories/*/content/read", "repositories/*/content/write", "repositories/*/metadata/read", "repositories/*/metadata/write"}},
}

// LookupSystemScopeMap finds a built-in scope map by name (ignoring case).
func LookupSystemScopeMap(name string) (SystemScopeMap, bool) {
	for _, m := range SystemScopeMaps {
		if strings.EqualFold(m.Name, name) {
			return m, true
		}
	}
	return SystemScopeMap{}, false
}
