package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arcacache/arca/internal/auth"
	"github.com/arcacache/arca/internal/config"
)

// registryKeys are fields az's registry model always prints.
var registryKeys = []string{"tags", "status"}

var registryTable = columnTable([]string{"name", "resourceGroup", "location", "sku", "loginServer", "creationDate", "adminUserEnabled"},
	func(m, r map[string]any) {
		if sku, ok := m["sku"].(map[string]any); ok {
			r["sku"] = sku["name"]
		}
	})

var (
	scopeMapKind = resourceKind{"scopeMaps", nil, columnTable([]string{"name", "type", "creationDate", "description"}, func(_, _ map[string]any) {})}
	tokenKind    = resourceKind{"tokens", nil, columnTable([]string{"name", "scopeMapId", "status", "provisioningState", "creationDate"}, func(_, _ map[string]any) {})}
	registryKind = resourceKind{"", registryKeys, registryTable}
)

// registryCmds are create, update, show, list and delete of registries;
// they exist twice, as `arca registry X` and `arca X` (az acr X).
func registryCmds(env Env) []*cobra.Command {
	return []*cobra.Command{newRegistryCreateCmd(env), newRegistryUpdateCmd(env), newRegistryShowCmd(env), newRegistryListCmd(env), newRegistryDeleteCmd(env), newShowUsageCmd(env)}
}

func newRegistryCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Manage registries (az acr create|update|show|list|delete); also reachable as arca create|update|...",
	}
	cmd.AddCommand(registryCmds(env)...)
	return cmd
}

// clientCmd gives cmd the shared client flags and returns its options.
func clientCmd(env Env, cmd *cobra.Command) *clientOpts {
	o := newClientOpts(env)
	o.addFlags(cmd.Flags())
	return o
}

// triBool is az's three-state boolean flag (true/false, unset).
type triBool struct{ v *bool }

func (b *triBool) String() string {
	if b.v == nil {
		return ""
	}
	return strconv.FormatBool(*b.v)
}
func (b *triBool) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return fmt.Errorf("%q is not true or false", s)
	}
	b.v = &v
	return nil
}
func (b *triBool) Type() string { return "bool" }

func boolFlag(fs *pflag.FlagSet, b *triBool, name, usage string) {
	fs.Var(b, name, usage)
}

type registryFlags struct {
	rg, sku, roleMode                 string
	tags                              []string
	admin, anon, public, dataEndpoint triBool
	cacheQuota, storageQuota          quotaFlag
}

// quotaFlag is a size flag that knows whether it was given.
type quotaFlag struct{ v *int64 }

func (q *quotaFlag) String() string {
	if q.v == nil {
		return ""
	}
	return config.FormatSize(*q.v)
}

func (q *quotaFlag) Set(s string) error {
	v, err := config.ParseSize(s)
	if err != nil {
		return err
	}
	n := int64(v)
	q.v = &n
	return nil
}

func (q *quotaFlag) Type() string { return "size" }

func (f *registryFlags) add(fs *pflag.FlagSet, update bool) {
	fs.StringVarP(&f.rg, "resource-group", "g", "", "Name of resource group. Defaults to the server's resource group.")
	fs.StringVar(&f.sku, "sku", "", "The SKU: Basic, Standard or Premium (recorded; in arca it changes nothing).")
	fs.StringArrayVar(&f.tags, "tags", nil, "Space-separated tags: key[=value] (repeatable). Use \"\" to clear existing tags.")
	boolFlag(fs, &f.admin, "admin-enabled", "Whether the admin user is enabled: true or false.")
	boolFlag(fs, &f.public, "public-network-enabled", "Whether public network access is allowed: true or false (recorded).")
	fs.StringVar(&f.roleMode, "role-assignment-mode", "", "rbac (LegacyRegistryPermissions) or rbac-abac (AbacRepositoryPermissions).")
	fs.Var(&f.cacheQuota, "cache-quota", "Bound on cached bytes, e.g. 20GiB or 500MB (arca extension; 0: none). Over it, the least recently pulled cached content is evicted.")
	fs.Var(&f.storageQuota, "storage-quota", "Bound on pushed bytes, e.g. 50GiB (arca extension; 0: none). A push over it is refused with DENIED.")
	if update {
		boolFlag(fs, &f.anon, "anonymous-pull-enabled", "Whether anonymous (unauthenticated) pulls are allowed: true or false.")
		boolFlag(fs, &f.dataEndpoint, "data-endpoint-enabled", "Whether the dedicated data endpoint is enabled: true or false (recorded).")
	}
}

// body is the PATCH/PUT body of the flags given.
func (f *registryFlags) body() (map[string]any, error) {
	body := map[string]any{}
	props := map[string]any{}
	if f.sku != "" {
		body["sku"] = map[string]any{"name": f.sku}
	}
	if f.tags != nil {
		tags := map[string]string{}
		for _, t := range f.tags {
			for _, kv := range strings.Fields(t) {
				k, v, _ := strings.Cut(kv, "=")
				tags[k] = v
			}
		}
		body["tags"] = tags
	}
	for name, b := range map[string]*triBool{"adminUserEnabled": &f.admin, "anonymousPullEnabled": &f.anon, "dataEndpointEnabled": &f.dataEndpoint} {
		if b.v != nil {
			props[name] = *b.v
		}
	}
	for name, q := range map[string]*quotaFlag{"cacheQuotaBytes": &f.cacheQuota, "storageQuotaBytes": &f.storageQuota} {
		if q.v != nil {
			props[name] = *q.v
		}
	}
	if f.public.v != nil {
		props["publicNetworkAccess"] = map[bool]string{true: "Enabled", false: "Disabled"}[*f.public.v]
	}
	if f.roleMode != "" {
		switch strings.ToLower(f.roleMode) {
		case "rbac":
			props["roleAssignmentMode"] = "LegacyRegistryPermissions"
		case "rbac-abac":
			props["roleAssignmentMode"] = "AbacRepositoryPermissions"
		default:
			return nil, fmt.Errorf("argument --role-assignment-mode: invalid choice: '%s' (choose from 'rbac', 'rbac-abac')", f.roleMode)
		}
	}
	if len(props) > 0 {
		body["properties"] = props
	}
	return body, nil
}

func newRegistryCreateCmd(env Env) *cobra.Command {
	var (
		name, location string
		f              registryFlags
	)
	cmd := clientRun(env, &cobra.Command{
		Use:     "create",
		Short:   "Create a registry, or update the one of this name (PUT).",
		Example: `  arca create -n myregistry --sku Standard --admin-enabled true`,
	}, []string{"name"}, func(o *clientOpts, cmd *cobra.Command) error {
		body, err := f.body()
		if err != nil {
			return err
		}
		if location != "" {
			body["location"] = location
		}
		if _, ok := body["sku"]; !ok {
			body["sku"] = map[string]any{"name": "Standard"}
		}
		return o.callAt(cmd, registryAt(name, f.rg), http.MethodPut, body, registryKind)
	})
	cmd.Flags().StringVarP(&name, "name", "n", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&location, "location", "l", "", "Location (recorded).")
	f.add(cmd.Flags(), false)
	return cmd
}

func newRegistryUpdateCmd(env Env) *cobra.Command {
	var (
		name string
		f    registryFlags
	)
	cmd := clientRun(env, &cobra.Command{
		Use:   "update",
		Short: "Update a registry.",
		Example: `  arca update -n myregistry --admin-enabled true
  arca update -n myregistry --anonymous-pull-enabled true
  arca update -n myregistry --cache-quota 20GiB --storage-quota 50GiB
  arca update --name myregistry --role-assignment-mode rbac-abac`,
	}, []string{"name"}, func(o *clientOpts, cmd *cobra.Command) error {
		body, err := f.body()
		if err != nil {
			return err
		}
		return o.callAt(cmd, registryAt(name, f.rg), http.MethodPatch, body, registryKind)
	})
	cmd.Flags().StringVarP(&name, "name", "n", "", "The name of the container registry.")
	f.add(cmd.Flags(), true)
	return cmd
}

func newRegistryShowCmd(env Env) *cobra.Command {
	var name, rg string
	cmd := clientRun(env, &cobra.Command{
		Use:     "show",
		Short:   "Show a registry.",
		Example: `  arca show -n myregistry --query id -o tsv`,
	}, []string{"name"}, func(o *clientOpts, cmd *cobra.Command) error {
		return o.callAt(cmd, registryAt(name, rg), http.MethodGet, nil, registryKind)
	})
	cmd.Flags().StringVarP(&name, "name", "n", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	return cmd
}

func newRegistryListCmd(env Env) *cobra.Command {
	var rg string
	cmd := clientRun(env, &cobra.Command{
		Use:     "list",
		Short:   "List the registries.",
		Example: `  arca list -o table`,
	}, nil, func(o *clientOpts, cmd *cobra.Command) error {
		return o.listAt(cmd, infoAt(func(info *serverInfo) string {
			if rg != "" {
				return "/subscriptions/" + pathEscape(info.SubscriptionID) + "/resourceGroups/" + pathEscape(rg) + "/providers/Microsoft.ContainerRegistry/registries"
			}
			return "/subscriptions/" + pathEscape(info.SubscriptionID) + "/providers/Microsoft.ContainerRegistry/registries"
		}), registryKind)
	})
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	return cmd
}

func newRegistryDeleteCmd(env Env) *cobra.Command {
	var (
		name, rg string
		yes      bool
	)
	cmd := clientRun(env, &cobra.Command{
		Use:     "delete",
		Short:   "Delete a registry.",
		Example: `  arca delete -n myregistry --yes`,
	}, []string{"name"}, func(o *clientOpts, cmd *cobra.Command) error {
		if err := confirm(o.env, "Are you sure you want to perform this operation?", yes); err != nil {
			return err
		}
		return o.callAt(cmd, registryAt(name, rg), http.MethodDelete, nil, registryKind)
	})
	cmd.Flags().StringVarP(&name, "name", "n", "", "The name of the container registry.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	return cmd
}

// credentialTable shows USERNAME, PASSWORD, PASSWORD2 as az does.
func credentialTable(v any) (any, map[string]int) {
	m, _ := v.(map[string]any)
	row := map[string]any{"username": m["username"]}
	pw, _ := m["passwords"].([]any)
	for _, p := range pw {
		if p, ok := p.(map[string]any); ok {
			row[str(p, "name")] = p["value"]
		}
	}
	return row, map[string]int{"username": 0, "password": 1, "password2": 2, "password1": 1}
}

func newCredentialCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credential",
		Short: "Manage the admin user's credentials (az acr credential)",
		Long: `Show or renew the admin user's two passwords. arca stores only their hashes:
a password's value is shown once, when it is generated (the first
"credential show" after the admin user is enabled generates both).`,
	}
	for _, renew := range []bool{false, true} {
		var name, rg, pwName string
		c := &cobra.Command{Use: "show", Short: "Get the login credentials of the admin user.", Args: cobra.NoArgs,
			Example: `  arca credential show -n myregistry`}
		if renew {
			c.Use, c.Short, c.Example = "renew", "Regenerate one of the admin user's passwords.", `  arca credential renew -n myregistry --password-name password2`
		}
		o := clientCmd(env, c)
		c.RunE = func(cmd *cobra.Command, _ []string) error {
			req := []string{"name"}
			if renew {
				req = append(req, "password-name")
			}
			if err := requireFlags(cmd, req...); err != nil {
				return err
			}
			return o.onPath(cmd, registryAt(name, rg), func(ctx context.Context, s *session, path string) error {
				op, body := "/listCredentials", any(nil)
				if renew {
					if pwName != "password" && pwName != "password2" {
						return fmt.Errorf("argument --password-name: invalid choice: '%s' (choose from 'password', 'password2')", pwName)
					}
					op, body = "/regenerateCredential", map[string]string{"name": pwName}
				}
				raw, err := s.call(ctx, http.MethodPost, withAPIVersion(path+op), body)
				if err != nil {
					return err
				}
				var m map[string]any
				if err := json.Unmarshal(raw, &m); err != nil {
					return fmt.Errorf("reading credentials: %w", err)
				}
				if pw, _ := m["passwords"].([]any); len(pw) > 0 && !renew {
					if p, _ := pw[0].(map[string]any); p["value"] == nil {
						warn(s.env, "arca keeps only password hashes, so existing passwords cannot be shown again; run 'arca credential renew -n %s --password-name password' for a new one.", name)
					}
				}
				s.out.table = credentialTable
				return s.out.print(m)
			})
		}
		c.Flags().StringVarP(&name, "name", "n", "", "The name of the container registry.")
		c.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
		if renew {
			c.Flags().StringVar(&pwName, "password-name", "", "The name of password to regenerate: password or password2.")
		}
		cmd.AddCommand(c)
	}
	return cmd
}

// repoActions are --repository REPO ACTION... groups; pflag cannot take a
// variable number of values per flag, so these commands read them from
// the raw arguments first.
type repoActions struct {
	repo    string
	actions []string
}

// splitRepoFlags takes the groups of flags (e.g. --repository) out of args.
func splitRepoFlags(args []string, flags ...string) (map[string][]repoActions, []string, error) {
	groups := map[string][]repoActions{}
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, isGroup := "", false
		for _, f := range flags {
			if a == "--"+f {
				name, isGroup = f, true
			}
		}
		if !isGroup {
			rest = append(rest, a)
			continue
		}
		g := repoActions{}
		for i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
			i++
			if g.repo == "" {
				g.repo = args[i]
			} else {
				g.actions = append(g.actions, strings.ToLower(args[i]))
			}
		}
		if g.repo == "" {
			return nil, nil, fmt.Errorf("argument --%s: expected a repository and at least one action", name)
		}
		if len(g.actions) == 0 && name != "remove-repository" {
			return nil, nil, fmt.Errorf("At least one action must be specified with \"%s\".", g.repo)
		}
		groups[name] = append(groups[name], g)
	}
	return groups, rest, nil
}

// scopeMapActions turns --repository groups into scope-map action strings.
func scopeMapActions(groups []repoActions) ([]string, error) {
	var out []string
	valid := auth.ScopeMapActionNames()
	for _, g := range groups {
		for _, a := range g.actions {
			if !contains(valid, a) {
				return nil, fmt.Errorf("Invalid action \"%s\" provided. \nValid actions are {%s}.", a, strings.Join(valid, ", "))
			}
			out = append(out, auth.ScopeMapAction(g.repo, a))
		}
	}
	return out, nil
}

// rawArgsCmd parses cmd's flags itself after taking out groupFlags, so
// --repository REPO ACTION... keeps its order.
func rawArgsCmd(cmd *cobra.Command, groupFlags []string, run func(cmd *cobra.Command, groups map[string][]repoActions) error) {
	cmd.DisableFlagParsing = true
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		groups, rest, err := splitRepoFlags(args, groupFlags...)
		if err != nil {
			return err
		}
		if err := cmd.Flags().Parse(rest); err != nil {
			return err
		}
		if help, _ := cmd.Flags().GetBool("help"); help {
			return cmd.Help()
		}
		if cmd.Flags().NArg() > 0 {
			return fmt.Errorf("unrecognized arguments: %s", strings.Join(cmd.Flags().Args(), " "))
		}
		return run(cmd, groups)
	}
	cmd.Flags().BoolP("help", "h", false, "help for "+cmd.Name())
}

func newScopeMapCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	cmd := &cobra.Command{
		Use:   "scope-map",
		Short: "Manage scope maps: which repositories a token may read, write or delete (az acr scope-map)",
		Long: `Manage scope maps. Actions: content/read (pull), content/write (push),
content/delete, metadata/read (list tags), metadata/write. A repository may
end in /* (every repository under it) or be * (the whole registry). The
system scope maps _repositories_pull, _repositories_push and
_repositories_admin are built in.`,
	}
	o.addFlags(cmd.PersistentFlags())
	var desc string
	create := &cobra.Command{Use: "create", Short: "Create a scope map.", Args: cobra.ArbitraryArgs,
		Example: `  arca scope-map create -r myregistry -n team-reader --repository 'team/*' content/read metadata/read --description "read team"`}
	var t target
	rawArgsCmd(create, []string{"repository"}, func(cmd *cobra.Command, g map[string][]repoActions) error {
		if err := requireFlags(cmd, "name", "registry"); err != nil {
			return err
		}
		acts, err := scopeMapActions(g["repository"])
		if err != nil {
			return err
		}
		if len(acts) == 0 {
			return errors.New("the following arguments are required: --repository")
		}
		body := map[string]any{"properties": map[string]any{"actions": acts, "description": desc}}
		return o.writeResource(cmd, t, scopeMapKind, http.MethodPut, body)
	})
	t.addFlags(create.Flags(), "The name of the scope map.")
	create.Flags().StringVar(&desc, "description", "", "Description for the scope map (at most 256 characters).")

	var ut target
	var udesc string
	update := &cobra.Command{Use: "update", Short: "Update a scope map.", Args: cobra.ArbitraryArgs,
		Example: `  arca scope-map update -r myregistry -n team-reader --add-repository team/app content/write --remove-repository team/old content/read`}
	rawArgsCmd(update, []string{"add-repository", "remove-repository"}, func(cmd *cobra.Command, g map[string][]repoActions) error {
		if err := requireFlags(cmd, "name", "registry"); err != nil {
			return err
		}
		add, err := scopeMapActions(g["add-repository"])
		if err != nil {
			return err
		}
		remove, err := scopeMapActions(g["remove-repository"])
		if err != nil {
			return err
		}
		return o.onResource(cmd, ut, scopeMapKind, func(ctx context.Context, s *session, _, path string) error {
			raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil)
			if err != nil {
				return err
			}
			var cur struct {
				Properties struct {
					Actions []string `json:"actions"`
				} `json:"properties"`
			}
			if err := json.Unmarshal(raw, &cur); err != nil {
				return fmt.Errorf("reading scope map: %w", err)
			}
			var acts []string
			for _, a := range append(cur.Properties.Actions, add...) {
				if !contains(remove, strings.ToLower(a)) && !contains(acts, strings.ToLower(a)) {
					acts = append(acts, strings.ToLower(a))
				}
			}
			props := map[string]any{"actions": acts}
			if cmd.Flags().Changed("description") {
				props["description"] = udesc
			}
			raw, err = s.call(ctx, http.MethodPatch, withAPIVersion(path), map[string]any{"properties": props})
			if err != nil {
				return err
			}
			return s.printResource(raw, scopeMapKind)
		})
	})
	ut.addFlags(update.Flags(), "The name of the scope map.")
	update.Flags().StringVar(&udesc, "description", "", "Description for the scope map.")
	cmd.AddCommand(create, update)
	cmd.AddCommand(showListDelete(o, scopeMapKind, "scope map")...)
	return cmd
}

// showListDelete are the show, list and delete commands of a child resource.
func showListDelete(o *clientOpts, k resourceKind, noun string) []*cobra.Command {
	var st, lt, dt target
	var yes bool
	show := &cobra.Command{Use: "show", Short: "Show a " + noun + ".", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name", "registry"); err != nil {
			return err
		}
		return o.showResource(cmd, st, k)
	}}
	st.addFlags(show.Flags(), "The name of the "+noun+".")
	list := &cobra.Command{Use: "list", Short: "List the " + noun + "s of a registry.", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "registry"); err != nil {
			return err
		}
		return o.showResource(cmd, lt, k)
	}}
	lt.addFlags(list.Flags(), "")
	del := &cobra.Command{Use: "delete", Short: "Delete a " + noun + ".", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name", "registry"); err != nil {
			return err
		}
		return o.deleteResource(cmd, dt, k, yes)
	}}
	dt.addFlags(del.Flags(), "The name of the "+noun+".")
	del.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	return []*cobra.Command{show, list, del}
}

type expiryFlags struct {
	days       int
	expiration string
}

func (e *expiryFlags) add(fs *pflag.FlagSet) {
	fs.IntVar(&e.days, "expiration-in-days", 0, "Number of days for which the password is valid (default: no expiry).")
	fs.StringVar(&e.expiration, "expiration", "", "UTC time at which the password expires, %Y-%m-%dT%H:%M:%SZ.")
}

func (e *expiryFlags) value() (string, error) {
	switch {
	case e.days < 0:
		// Not "no expiry", as 0 (or leaving it out) is.
		return "", fmt.Errorf("argument --expiration-in-days: %d is not a number of days from now (use 1 or more; without it the password does not expire)", e.days)
	case e.days > 0 && e.expiration != "":
		return "", errors.New("--expiration and --expiration-in-days are mutually exclusive")
	case e.days > 0:
		return time.Now().UTC().Add(time.Duration(e.days) * 24 * time.Hour).Format(time.RFC3339), nil
	case e.expiration != "":
		t, err := time.Parse("2006-01-02T15:04:05Z", e.expiration)
		if err != nil {
			return "", fmt.Errorf("argument --expiration: want %%Y-%%m-%%dT%%H:%%M:%%SZ: %w", err)
		}
		return t.Format(time.RFC3339), nil
	}
	return "", nil
}

// generateTokenPasswords POSTs generateCredentials for token (names: both
// when empty) and returns the answer.
func generateTokenPasswords(ctx context.Context, s *session, base, tokenID, name, expiry string) (map[string]any, error) {
	body := map[string]any{"tokenId": tokenID}
	if name != "" {
		body["name"] = name
	}
	if expiry != "" {
		body["expiry"] = expiry
	}
	raw, err := s.call(ctx, http.MethodPost, withAPIVersion(base+"/generateCredentials"), body)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("reading generated credentials: %w", err)
	}
	return m, nil
}

func newTokenCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage repository-scoped access tokens (az acr token)",
		Long: `Manage tokens: a name and two passwords that log in to the registry
(docker login, crane auth login, ...) with the permissions of a scope map.
Passwords are shown once, when generated.`,
	}
	o.addFlags(cmd.PersistentFlags())

	var (
		ct          target
		scopeMap    string
		status      string
		noPasswords bool
		cexp        expiryFlags
	)
	create := &cobra.Command{Use: "create", Short: "Create a token and generate its passwords.", Args: cobra.ArbitraryArgs,
		Example: `  arca token create -r myregistry -n ci-reader --scope-map team-reader
  arca token create -r myregistry -n ci-pusher --repository team/app content/write content/read`}
	rawArgsCmd(create, []string{"repository"}, func(cmd *cobra.Command, g map[string][]repoActions) error {
		if err := requireFlags(cmd, "name", "registry"); err != nil {
			return err
		}
		acts, err := scopeMapActions(g["repository"])
		if err != nil {
			return err
		}
		if (scopeMap == "") == (len(acts) == 0) {
			return errors.New("Please specify either --scope-map or --repository")
		}
		expiry, err := cexp.value()
		if err != nil {
			return err
		}
		return o.onResource(cmd, ct, tokenKind, func(ctx context.Context, s *session, base, path string) error {
			if len(acts) > 0 {
				// As az: a "<token>-scope-map" made for this token.
				scopeMap = ct.name + "-scope-map"
				smPath := base + "/scopeMaps/" + pathEscape(scopeMap)
				if _, err := s.call(ctx, http.MethodPut, withAPIVersion(smPath), map[string]any{"properties": map[string]any{
					"actions": acts, "description": "Created by token: " + ct.name}}); err != nil {
					return err
				}
			}
			props := map[string]any{"scopeMapId": base + "/scopeMaps/" + scopeMap, "status": firstNonEmpty(status, auth.StatusEnabled)}
			raw, err := s.call(ctx, http.MethodPut, withAPIVersion(path), map[string]any{"properties": props})
			if err != nil {
				return err
			}
			m, err := decodeResource(raw)
			if err != nil {
				return err
			}
			if !noPasswords {
				gen, err := generateTokenPasswords(ctx, s, base, str(m, "id"), "", expiry)
				if err != nil {
					return err
				}
				creds, _ := m["credentials"].(map[string]any)
				if creds == nil {
					creds = map[string]any{}
				}
				creds["username"], creds["passwords"] = gen["username"], gen["passwords"]
				m["credentials"] = creds
			}
			s.out.table = tokenKind.table
			return s.out.print(m)
		})
	})
	ct.addFlags(create.Flags(), "The name of the token.")
	create.Flags().StringVar(&scopeMap, "scope-map", "", "The name of the scope map (system maps: _repositories_pull, _repositories_push, _repositories_admin).")
	create.Flags().StringVar(&status, "status", "", "The status of the token: enabled (default) or disabled.")
	create.Flags().BoolVar(&noPasswords, "no-passwords", false, "Do not generate passwords.")
	cexp.add(create.Flags())

	var (
		ut        target
		uScopeMap string
		uStatus   string
	)
	update := &cobra.Command{Use: "update", Short: "Update a token's scope map or status.", Args: cobra.NoArgs,
		Example: `  arca token update -r myregistry -n ci-reader --status disabled
  arca token update -r myregistry -n ci-reader --scope-map _repositories_pull`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			return o.onResource(cmd, ut, tokenKind, func(ctx context.Context, s *session, base, path string) error {
				props := map[string]any{}
				if uStatus != "" {
					props["status"] = uStatus
				}
				if uScopeMap != "" {
					props["scopeMapId"] = base + "/scopeMaps/" + uScopeMap
				}
				raw, err := s.call(ctx, http.MethodPatch, withAPIVersion(path), map[string]any{"properties": props})
				if err != nil {
					return err
				}
				return s.printResource(raw, tokenKind)
			})
		}}
	ut.addFlags(update.Flags(), "The name of the token.")
	update.Flags().StringVar(&uScopeMap, "scope-map", "", "The name of the scope map to associate with the token.")
	update.Flags().StringVar(&uStatus, "status", "", "The status of the token: enabled or disabled.")

	credential := &cobra.Command{Use: "credential", Short: "Manage a token's passwords."}
	var (
		gt       target
		p1, p2   bool
		gexp     expiryFlags
		generate = &cobra.Command{Use: "generate", Short: "Generate a token's passwords (both, or the one flagged).", Args: cobra.NoArgs,
			Example: `  arca token credential generate -r myregistry -n ci-reader --password1 --expiration-in-days 30`}
	)
	generate.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name", "registry"); err != nil {
			return err
		}
		expiry, err := gexp.value()
		if err != nil {
			return err
		}
		name := ""
		if p1 != p2 {
			name = map[bool]string{true: "password1", false: "password2"}[p1]
		}
		return o.onResource(cmd, gt, tokenKind, func(ctx context.Context, s *session, base, path string) error {
			gen, err := generateTokenPasswords(ctx, s, base, path, name, expiry)
			if err != nil {
				return err
			}
			s.out.table = credentialTable
			return s.out.print(gen)
		})
	}
	gt.addFlags(generate.Flags(), "The name of the token.")
	generate.Flags().BoolVar(&p1, "password1", false, "Generate password1.")
	generate.Flags().BoolVar(&p2, "password2", false, "Generate password2.")
	gexp.add(generate.Flags())
	credential.AddCommand(generate, newTokenCredentialDeleteCmd(o))

	cmd.AddCommand(create, update, credential)
	cmd.AddCommand(showListDelete(o, tokenKind, "token")...)
	return cmd
}

// arcaAPI calls arca's own API (/arca/v1/...) and prints the answer.
func (o *clientOpts) arcaAPI(cmd *cobra.Command, method, path string, body any, list bool) error {
	s, err := o.connect()
	if err != nil {
		return err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	resp, err := s.arm.Do(ctx, method, path, body)
	if err != nil {
		return s.authHint(err)
	}
	if len(resp.Body) == 0 {
		return nil
	}
	var v map[string]any
	if err := json.Unmarshal(resp.Body, &v); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if list {
		return s.out.print(v["value"])
	}
	return s.out.print(v)
}

func newPrincipalCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	cmd := &cobra.Command{
		Use:   "principal",
		Short: "Manage management principals: tokens with a role (Owner, Contributor, Reader, AcrPull, AcrPush, AcrDelete)",
		Long: `Manage principals: named management tokens with a role, optionally limited
to one registry. Owner, Contributor and Reader act on the management API
(Reader only reads; Contributor changes everything but principals). Every
role also logs in to the data plane (user name = principal name, password =
its token): Owner and Contributor may do everything, Reader and AcrPull pull,
AcrPush pulls and pushes, AcrDelete deletes. Only Owners of every registry
manage principals. A token is shown once, when created.`,
	}
	o.addFlags(cmd.PersistentFlags())
	var name, role, reg string
	create := &cobra.Command{Use: "create", Short: "Create a principal (or replace its token and role).", Args: cobra.NoArgs,
		Example: `  arca principal create -n ci-rules --role Contributor -r myregistry`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "role"); err != nil {
				return err
			}
			return o.arcaAPI(cmd, http.MethodPut, "/arca/v1/principals/"+pathEscape(name), map[string]string{"role": role, "registry": reg}, false)
		}}
	create.Flags().StringVarP(&name, "name", "n", "", "The name of the principal.")
	create.Flags().StringVar(&role, "role", "", "Owner, Contributor, Reader, AcrPull, AcrPush or AcrDelete.")
	create.Flags().StringVarP(&reg, "registry", "r", "", "Limit the principal to this registry.")
	list := &cobra.Command{Use: "list", Short: "List the principals.", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		return o.arcaAPI(cmd, http.MethodGet, "/arca/v1/principals", nil, true)
	}}
	var dname string
	var yes bool
	del := &cobra.Command{Use: "delete", Short: "Delete a principal.", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name"); err != nil {
			return err
		}
		if err := confirm(o.env, "Are you sure you want to perform this operation?", yes); err != nil {
			return err
		}
		return o.arcaAPI(cmd, http.MethodDelete, "/arca/v1/principals/"+pathEscape(dname), nil, false)
	}}
	del.Flags().StringVarP(&dname, "name", "n", "", "The name of the principal.")
	del.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	cmd.AddCommand(create, list, del)
	return cmd
}

func newAuditCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	cmd := &cobra.Command{Use: "audit", Short: "Read the audit log: management changes and failed logins (Owners)"}
	o.addFlags(cmd.PersistentFlags())
	var since time.Duration
	var top int
	list := &cobra.Command{Use: "list", Short: "List audit entries, newest first.", Args: cobra.NoArgs,
		Example: `  arca audit list --since 24h -o table`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := fmt.Sprintf("/arca/v1/audit?top=%d", top)
			if since > 0 {
				path += "&since=" + time.Now().Add(-since).UTC().Format(time.RFC3339)
			}
			return o.arcaAPI(cmd, http.MethodGet, path, nil, true)
		}}
	list.Flags().DurationVar(&since, "since", 0, "Only entries newer than this (e.g. 24h).")
	list.Flags().IntVar(&top, "top", 1000, "At most this many entries.")
	cmd.AddCommand(list)
	return cmd
}

// newTokenCredentialDeleteCmd is az acr token credential delete: PATCH the
// token with the password names to keep.
func newTokenCredentialDeleteCmd(o *clientOpts) *cobra.Command {
	var (
		t      target
		p1, p2 bool
	)
	cmd := &cobra.Command{Use: "delete", Short: "Delete a token's password1, password2 or both.", Args: cobra.NoArgs,
		Example: `  arca token credential delete -r myregistry -n ci-reader --password1`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireFlags(cmd, "name", "registry"); err != nil {
				return err
			}
			if !p1 && !p2 {
				return errors.New("No credentials to delete.")
			}
			return o.onResource(cmd, t, tokenKind, func(ctx context.Context, s *session, _, path string) error {
				raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path), nil)
				if err != nil {
					return err
				}
				var cur struct {
					Properties struct {
						Credentials struct {
							Passwords []struct {
								Name string `json:"name"`
							} `json:"passwords"`
						} `json:"credentials"`
					} `json:"properties"`
				}
				if err := json.Unmarshal(raw, &cur); err != nil {
					return fmt.Errorf("reading token %s: %w", t.name, err)
				}
				keep := []map[string]string{}
				for _, p := range cur.Properties.Credentials.Passwords {
					if (p.Name == "password1" && p1) || (p.Name == "password2" && p2) {
						continue
					}
					keep = append(keep, map[string]string{"name": p.Name})
				}
				body := map[string]any{"properties": map[string]any{"credentials": map[string]any{"passwords": keep}}}
				raw, err = s.call(ctx, http.MethodPatch, withAPIVersion(path), body)
				if err != nil {
					return err
				}
				return s.printResource(raw, tokenKind)
			})
		}}
	t.addFlags(cmd.Flags(), "The name of the token.")
	cmd.Flags().BoolVar(&p1, "password1", false, "Delete password1.")
	cmd.Flags().BoolVar(&p2, "password2", false, "Delete password2.")
	return cmd
}
