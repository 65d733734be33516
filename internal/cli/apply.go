package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func newApplyCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	var (
		file, registry, rg string
		prune, dryRun      bool
	)
	cmd := &cobra.Command{
		Use:   "apply",
		Short: "Make a registry's cache rules and credential sets match a YAML file",
		Long: `Read a declarative file (see docs/cli.md) and create or update the credential
sets and cache rules it lists; with --prune also delete those it does not
list. Running it again changes nothing. --dry-run prints the plan (create,
update, delete or unchanged per resource) and changes nothing.

Credential sets are written before the rules that use them; rules are
deleted before credential sets.`,
		Example: `  arca apply -f arca.yaml
  arca apply -f arca.yaml -r myregistry --prune --dry-run
  cat arca.yaml | arca apply -f - -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "file"); err != nil {
				return err
			}
			f, err := readApplyFile(file, env.Stdin)
			if err != nil {
				return err
			}
			if err := f.validate(); err != nil {
				return err
			}
			f.Registry = firstNonEmpty(registry, f.Registry)
			f.ResourceGroup = firstNonEmpty(rg, f.ResourceGroup)
			if f.Registry == "" {
				return fmt.Errorf("the following arguments are required: --registry/-r (or registry: in %s)", file)
			}
			return o.apply(cmd, f, prune, dryRun)
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&file, "file", "f", "", "YAML file to apply (- for stdin)")
	fs.StringVarP(&registry, "registry", "r", "", "registry to apply to (overrides registry: in the file)")
	fs.StringVarP(&rg, "resource-group", "g", "", "Name of resource group. Defaults to the server's resource group.")
	fs.BoolVar(&prune, "prune", false, "delete cache rules and credential sets the file does not list")
	fs.BoolVar(&dryRun, "dry-run", false, "print the plan and change nothing")
	o.addFlags(fs)
	// A plan reads best as a table; -o json gives it to scripts.
	if err := fs.Set("output", "table"); err != nil {
		panic(err) // the flag was just defined
	}
	fs.Lookup("output").DefValue = "table"
	fs.Lookup("output").Changed = false
	return cmd
}

// step is one line of the plan.
type step struct {
	Action  string `json:"action"` // create, update, delete, unchanged
	Kind    string `json:"kind"`   // credentialSet, cacheRule
	Name    string `json:"name"`
	Changes string `json:"changes,omitempty"`
	method  string
	path    string
	body    any
}

func (o *clientOpts) apply(cmd *cobra.Command, f *applyFile, prune, dryRun bool) error {
	s, err := o.connect()
	if err != nil {
		return err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	base, err := s.registryPath(ctx, f.Registry, f.ResourceGroup)
	if err != nil {
		return err
	}
	plan, err := s.plan(ctx, base, f, prune)
	if err != nil {
		return err
	}
	if !dryRun {
		for _, st := range plan {
			if st.method == "" {
				continue
			}
			if _, err := s.call(ctx, st.method, withAPIVersion(st.path), st.body); err != nil {
				return fmt.Errorf("%s %s %s: %w", st.Action, st.Kind, st.Name, err)
			}
		}
	}
	fmt.Fprintln(o.env.Stderr, summary(plan, dryRun))
	rows := make([]any, len(plan))
	for i, st := range plan {
		b, _ := json.Marshal(st)
		var m map[string]any
		_ = json.Unmarshal(b, &m)
		rows[i] = m
	}
	s.out.table = func(v any) (any, map[string]int) {
		return v, map[string]int{"action": 0, "kind": 1, "name": 2, "changes": 3}
	}
	return s.out.print(rows)
}

func summary(plan []step, dryRun bool) string {
	n := map[string]int{}
	for _, st := range plan {
		n[st.Action]++
	}
	if n["create"]+n["update"]+n["delete"] == 0 {
		return fmt.Sprintf("No changes: %d unchanged.", n["unchanged"])
	}
	if dryRun {
		return fmt.Sprintf("Plan: %d to create, %d to update, %d to delete, %d unchanged.", n["create"], n["update"], n["delete"], n["unchanged"])
	}
	return fmt.Sprintf("Applied: %d created, %d updated, %d deleted, %d unchanged.", n["create"], n["update"], n["delete"], n["unchanged"])
}

// plan compares the file with the server. Order: credential sets
// (create, update), rules (create, update), rules deleted, credential
// sets deleted, so references are never dangling at any step.
func (s *session) plan(ctx context.Context, base string, f *applyFile, prune bool) ([]step, error) {
	curSets, err := s.currentByName(ctx, base+"/credentialSets")
	if err != nil {
		return nil, err
	}
	curRules, err := s.currentByName(ctx, base+"/cacheRules")
	if err != nil {
		return nil, err
	}
	var plan, deletes []step
	for _, cs := range f.CredentialSets {
		plan = append(plan, credSetStep(base, cs, curSets[strings.ToLower(cs.Name)]))
		delete(curSets, strings.ToLower(cs.Name))
	}
	for i := range f.CacheRules {
		r := &f.CacheRules[i]
		plan = append(plan, ruleStep(base, r, curRules[strings.ToLower(r.Name)]))
		delete(curRules, strings.ToLower(r.Name))
	}
	if prune {
		deletes = append(deletes, deleteSteps(base, "cacheRule", "/cacheRules/", curRules)...)
		deletes = append(deletes, deleteSteps(base, "credentialSet", "/credentialSets/", curSets)...)
	}
	return append(plan, deletes...), nil
}

// currentByName lists a collection keyed by lower-cased name.
func (s *session) currentByName(ctx context.Context, path string) (map[string]json.RawMessage, error) {
	items, err := s.list(ctx, withAPIVersion(path))
	if err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	for _, raw := range items {
		var head struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(raw, &head); err != nil || head.Name == "" {
			return nil, fmt.Errorf("listing %s: an item has no name", path)
		}
		out[strings.ToLower(head.Name)] = raw
	}
	return out, nil
}

func deleteSteps(base, kind, coll string, left map[string]json.RawMessage) []step {
	names := make([]string, 0, len(left))
	for _, raw := range left {
		var head struct {
			Name string `json:"name"`
		}
		_ = json.Unmarshal(raw, &head)
		names = append(names, head.Name)
	}
	sort.Strings(names)
	out := make([]step, 0, len(names))
	for _, n := range names {
		out = append(out, step{Action: "delete", Kind: kind, Name: n, method: http.MethodDelete, path: base + coll + pathEscape(n)})
	}
	return out
}

func credSetStep(base string, cs applyCredSet, cur json.RawMessage) step {
	st := step{Kind: "credentialSet", Name: cs.Name, path: base + "/credentialSets/" + pathEscape(cs.Name)}
	var body credSetBody
	body.Properties.LoginServer = cs.LoginServer
	body.Properties.AuthCredentials = []authCredential{{Name: credentialName, UsernameSecretIdentifier: cs.UsernameSecretID, PasswordSecretIdentifier: cs.PasswordSecretID}}
	body.Identity, _ = credSetIdentity(cs.Identity) // checked by validate
	want := map[string]string{"loginServer": strings.ToLower(cs.LoginServer), "usernameSecretId": cs.UsernameSecretID, "passwordSecretId": cs.PasswordSecretID,
		"identity": strings.ToLower(cs.Identity)}
	return finish(st, want, credSetView(cur), cur, body)
}

func credSetView(raw json.RawMessage) map[string]string {
	var cur existingCredSet
	_ = json.Unmarshal(raw, &cur)
	v := map[string]string{"loginServer": strings.ToLower(cur.Properties.LoginServer), "identity": ""}
	if cur.Identity != nil {
		for id := range cur.Identity.UserAssignedIdentities {
			v["identity"] = strings.ToLower(id)
		}
	}
	if len(cur.Properties.AuthCredentials) > 0 {
		v["usernameSecretId"] = cur.Properties.AuthCredentials[0].UsernameSecretIdentifier
		v["passwordSecretId"] = cur.Properties.AuthCredentials[0].PasswordSecretIdentifier
	}
	return v
}

func ruleStep(base string, r *applyRule, cur json.RawMessage) step {
	st := step{Kind: "cacheRule", Name: r.Name, path: base + "/cacheRules/" + pathEscape(r.Name)}
	body := r.body(base)
	var e existingRule
	_ = json.Unmarshal(cur, &e)
	return finish(st, ruleViewOfBody(body), ruleViewOfExisting(e), cur, body)
}

// finish sets the action: create when absent, update (PUT, the whole
// desired state) when any compared field differs, else unchanged.
func finish(st step, want, have map[string]string, cur json.RawMessage, body any) step {
	if cur == nil {
		st.Action, st.method, st.body = "create", http.MethodPut, body
		return st
	}
	var changed []string
	for k, v := range want {
		if have[k] != v {
			changed = append(changed, k)
		}
	}
	for k := range have {
		if _, ok := want[k]; !ok {
			changed = append(changed, k)
		}
	}
	if len(changed) == 0 {
		st.Action = "unchanged"
		return st
	}
	sort.Strings(changed)
	st.Action, st.Changes, st.method, st.body = "update", strings.Join(changed, ", "), http.MethodPut, body
	return st
}

func ruleViewOfBody(b ruleBody) map[string]string {
	p := b.Properties
	cred := ""
	if p.CredentialSetResourceID != nil {
		cred = *p.CredentialSetResourceID
	}
	ident := ""
	if b.Identity != nil {
		for id := range b.Identity.UserAssignedIdentities {
			ident = id
		}
	}
	return ruleView(p.SourceRepository, p.TargetRepository, cred, ident, p.SyncMode, p.SyncReferrers, p.RetentionDays, p.ArtifactSyncFilters)
}

func ruleViewOfExisting(e existingRule) map[string]string {
	p := e.Properties
	mode := canonicalEnum(firstNonEmpty(p.SyncMode, passiveSync), activeSync, passiveSync)
	refs := canonicalEnum(firstNonEmpty(p.SyncReferrers, disabled), enabled, disabled)
	return ruleView(p.SourceRepository, p.TargetRepository, p.CredentialSetResourceID, e.identityID(), mode, refs, p.RetentionDays, p.ArtifactSyncFilters)
}

// ruleView flattens a rule into comparable strings. ARM ids compare
// case-insensitively; filters only count for ActiveSync rules.
func ruleView(src, tgt, cred, ident, mode, refs string, retention int, f *syncFilters) map[string]string {
	v := map[string]string{
		"sourceRepository": src, "targetRepository": tgt,
		"credentialSet": strings.ToLower(cred), "identity": strings.ToLower(ident),
		"syncMode": mode, "syncReferrers": refs, "retentionDays": strconv.Itoa(retention),
	}
	if mode != activeSync {
		return v
	}
	v["tags"] = "Tags"
	if f != nil {
		if f.Tags != nil && strings.TrimSpace(f.Tags.Query) != "" {
			v["tags"] = strings.TrimSpace(f.Tags.Query)
		}
		v["platforms"] = valuesView(f.Platforms)
		v["artifactTypes"] = valuesView(f.ArtifactTypes)
		v["imageTypes"] = valuesView(f.ImageTypes)
	}
	for _, k := range []string{"platforms", "artifactTypes", "imageTypes"} {
		if v[k] == "" {
			delete(v, k)
		}
	}
	return v
}

func valuesView(f *valuesFilter) string {
	if f == nil || len(f.Values) == 0 {
		return ""
	}
	return strings.ToLower(f.Type) + ":" + strings.Join(f.Values, ",")
}
