package rules

import (
	"fmt"
	"sort"
	"strings"
)

// DefaultMaxRules is ACR's limit of cache rules per registry.
const DefaultMaxRules = 1000

// Env is what checking a rule against the rest of its registry needs. The
// caller reads it inside the transaction that will write the rule, so the
// checks and the write see the same state.
type Env struct {
	// Others are the registry's rules except the one being written.
	Others   []Rule
	MaxRules int // <= 0 means DefaultMaxRules
	// CredentialSet looks up a credential set of the registry by name.
	CredentialSet func(name string) (CredentialSet, bool, error)
	// RepositoryExists reports whether repo holds content.
	RepositoryExists func(repo string) (bool, error)
	// RepositoryUnder returns a repository whose name starts with prefix
	// ("" = any), if one exists.
	RepositoryUnder func(prefix string) (string, bool, error)
}

// Check validates r (see Rule.Validate) and checks it against env. prev is
// the stored rule r replaces, nil when r is new: source and target of an
// existing rule cannot change, and the target checks only apply to new rules.
func Check(r *Rule, prev *Rule, env Env) error {
	if err := r.Validate(); err != nil {
		return err
	}
	if err := checkCredentialSet(r, env); err != nil {
		return err
	}
	if prev != nil {
		if prev.Source != r.Source || prev.Target != r.Target {
			return errorf(CodePropertyChange, "cache rule %q: sourceRepository and targetRepository cannot be changed (have %s => %s); delete the rule and create it again", r.Name, prev.Target, prev.Source)
		}
		return nil
	}
	max := env.MaxRules
	if max <= 0 {
		max = DefaultMaxRules
	}
	if len(env.Others) >= max {
		return errorf(CodeQuotaExceeded, "the registry already has %d cache rules, the limit", len(env.Others))
	}
	if err := CheckOverlap(r, env.Others); err != nil {
		return err
	}
	return checkRepositories(r, env)
}

func checkCredentialSet(r *Rule, env Env) error {
	if r.CredentialSet == "" {
		return nil
	}
	cs, ok, err := env.CredentialSet(r.CredentialSet)
	if err != nil {
		return fmt.Errorf("look up credential set: %w", err)
	}
	if !ok {
		return errorf(CodeCredentialSetNotFound, "credentialSetResourceId: the credential set %q does not exist in this registry", r.CredentialSet)
	}
	if CanonicalLoginServer(cs.LoginServer) != CanonicalLoginServer(r.src.LoginServer) {
		return errorf(CodeLoginServerMismatch, "credential set %q is for login server %q, but sourceRepository %q is on %q", cs.Name, cs.LoginServer, r.Source, r.src.LoginServer)
	}
	return nil
}

// CheckOverlap applies the overlap rules of spec 3.1 to a new rule: a
// wildcard target may neither equal nor contain nor lie within another
// wildcard target; static targets may lie under wildcards, but two rules
// may not have the same static target.
func CheckOverlap(r *Rule, others []Rule) error {
	tgt, err := ParseTarget(r.Target)
	if err != nil {
		return err
	}
	for i := range others {
		o := &others[i]
		if strings.EqualFold(o.Name, r.Name) {
			continue
		}
		if o.Target == r.Target {
			if tgt.Wildcard {
				return errorf(CodeWildcardOverlap, "there is already a cache rule with a wildcard for the target repository %q: rule %q", r.Target, o.Name)
			}
			return errorf(CodeTargetConflict, "cache rule %q already has the target repository %q; two rules cannot share a target", o.Name, r.Target)
		}
		if !tgt.Wildcard || !o.Wildcard() {
			continue
		}
		ot, err := ParseTarget(o.Target)
		if err != nil {
			continue // a stored rule that no longer parses cannot overlap
		}
		if within(tgt.Prefix, ot.Prefix) || within(ot.Prefix, tgt.Prefix) {
			return errorf(CodeWildcardOverlap, "wildcard target %q overlaps the wildcard target %q of cache rule %q: wildcard rules cannot target the same path or paths where one includes the other", r.Target, o.Target, o.Name)
		}
	}
	return nil
}

// within reports whether path p lies under wildcard prefix q ("" = all).
func within(p, q string) bool {
	return q == "" || p == q || strings.HasPrefix(p, q+"/")
}

func checkRepositories(r *Rule, env Env) error {
	if !r.tgt.Wildcard {
		ok, err := env.RepositoryExists(r.Target)
		if err != nil {
			return fmt.Errorf("look up repository: %w", err)
		}
		if ok {
			return errorf(CodeTargetPresent, "Conflict: Target repository '%s' is already present in registry. Cache rules cannot be created for existing repositories in registry. For more information, please visit https://aka.ms/acr/cache", r.Target)
		}
		return nil
	}
	prefix := ""
	if r.tgt.Prefix != "" {
		prefix = r.tgt.Prefix + "/"
	}
	repo, ok, err := env.RepositoryUnder(prefix)
	if err != nil {
		return fmt.Errorf("look up repositories: %w", err)
	}
	if ok {
		return errorf(CodeTargetPrefixPresent, "There are one or more target repositories in the registry which match the target repository prefix '%s' (e.g. '%s').", r.Target, repo)
	}
	return nil
}

// RulesUsing returns the names of the rules that use credential set name.
func RulesUsing(name string, rules []Rule) []string {
	var out []string
	for _, r := range rules {
		if strings.EqualFold(r.CredentialSet, name) {
			out = append(out, r.Name)
		}
	}
	sort.Strings(out)
	return out
}
