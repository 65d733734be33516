package rules

import "strings"

// Index finds the rule serving a repository. It is immutable and safe for
// concurrent use; build a new one when the rules change.
type Index struct {
	static map[string]*indexed // by exact target
	wild   map[string]*indexed // by target prefix without "/*" ("" for "*")
}

type indexed struct {
	rule     Rule
	upstream string // static: the full upstream; wildcard: the source prefix to which "/<rest>" is appended
}

// NewIndex indexes rules. Rules that do not parse are skipped (the
// management API never stores one).
func NewIndex(rules []Rule) *Index {
	ix := &Index{static: make(map[string]*indexed), wild: make(map[string]*indexed)}
	for _, r := range rules {
		src, err := ParseSource(r.Source)
		if err != nil {
			continue
		}
		tgt, err := ParseTarget(r.Target)
		if err != nil || src.Wildcard != tgt.Wildcard {
			continue
		}
		r.src, r.tgt = src, tgt
		e := &indexed{rule: r, upstream: src.Upstream()}
		if tgt.Wildcard {
			ix.wild[tgt.Prefix] = e
		} else {
			ix.static[tgt.Prefix] = e
		}
	}
	return ix
}

// Len is the number of indexed rules.
func (ix *Index) Len() int { return len(ix.static) + len(ix.wild) }

// Match returns the rule serving target repository repo and the upstream
// repository it maps to ("<login server>/<path>"). A static rule wins over
// wildcards; among wildcards the longest prefix wins (dotnet/* before *).
// With rule docker.io/library/* => dockerhub/*, "dockerhub/nginx" maps to
// "docker.io/library/nginx". The returned rule must not be modified. Cost
// is one map lookup per path component, whatever the number of rules.
func (ix *Index) Match(repo string) (r *Rule, upstream string, ok bool) {
	if e, found := ix.static[repo]; found {
		return &e.rule, e.upstream, true
	}
	for p := repo; ; {
		i := strings.LastIndexByte(p, '/')
		if i < 0 {
			break
		}
		p = p[:i]
		if e, found := ix.wild[p]; found {
			return &e.rule, e.upstream + repo[i:], true
		}
	}
	if e, found := ix.wild[""]; found && repo != "" {
		return &e.rule, e.upstream + "/" + repo, true
	}
	return nil, "", false
}
