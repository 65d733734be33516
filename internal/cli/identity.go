package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/auth"
)

var (
	identityTable = columnTable([]string{"name", "resourceGroup", "location", "clientId", "principalId"}, func(_, _ map[string]any) {})
	identityKind  = resourceKind{"", []string{"tags"}, identityTable}
	ficKind       = resourceKind{"", nil, columnTable([]string{"name", "resourceGroup", "issuer", "subject"}, func(_, _ map[string]any) {})}
	roleKind      = resourceKind{"", []string{"canDelegate", "condition", "conditionVersion", "description"},
		columnTable([]string{"principalId", "roleDefinitionName", "scope"}, func(_, _ map[string]any) {})}
)

// withServer runs fn with a session and the server's info.
func (o *clientOpts) withServer(cmd *cobra.Command, fn func(ctx context.Context, s *session, info *serverInfo) error) error {
	s, err := o.connect()
	if err != nil {
		return err
	}
	ctx, cancel := o.context(cmd)
	defer cancel()
	info, err := s.serverInfo(ctx)
	if err != nil {
		return err
	}
	return fn(ctx, s, info)
}

func identityPath(info *serverInfo, rg, name string) string {
	p := "/subscriptions/" + pathEscape(info.SubscriptionID) + "/resourceGroups/" + pathEscape(rg) + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
	if name != "" {
		p += "/" + pathEscape(name)
	}
	return p
}

func newIdentityCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "identity",
		Short: "Manage user-assigned identities (az identity): principals that authenticate with federated tokens",
	}
	cmd.AddCommand(newIdentityCreateCmd(env), newIdentityShowCmd(env), newIdentityListCmd(env), newIdentityDeleteCmd(env), newFICCmd(env))
	return cmd
}

func newIdentityCreateCmd(env Env) *cobra.Command {
	var name, rg, location string
	var tags []string
	cmd := &cobra.Command{
		Use:     "create",
		Short:   "Create an identity (or update the tags of the one of this name).",
		Example: `  arca identity create -g MyResourceGroup -n MyACRCacheIdentity`,
		Args:    cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name", "resource-group"); err != nil {
			return err
		}
		return o.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			body := map[string]any{}
			if location != "" {
				body["location"] = location
			}
			if tags != nil {
				body["tags"] = parseTags(tags)
			}
			raw, err := s.call(ctx, http.MethodPut, withAPIVersion(identityPath(info, rg, name)), body)
			if err != nil {
				return err
			}
			return s.printResource(raw, identityKind)
		})
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "The name of the identity.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	cmd.Flags().StringVarP(&location, "location", "l", "", "Location (recorded).")
	cmd.Flags().StringArrayVar(&tags, "tags", nil, "Space-separated tags: key[=value].")
	return cmd
}

// parseTags reads az's --tags values.
func parseTags(tags []string) map[string]string {
	out := map[string]string{}
	for _, t := range tags {
		for _, kv := range strings.Fields(t) {
			k, v, _ := strings.Cut(kv, "=")
			out[k] = v
		}
	}
	return out
}

func newIdentityShowCmd(env Env) *cobra.Command {
	var name, rg string
	cmd := &cobra.Command{
		Use:     "show",
		Short:   "Show an identity.",
		Example: `  arca identity show -g MyResourceGroup -n MyACRCacheIdentity --query principalId -o tsv`,
		Args:    cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name", "resource-group"); err != nil {
			return err
		}
		return o.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			raw, err := s.call(ctx, http.MethodGet, withAPIVersion(identityPath(info, rg, name)), nil)
			if err != nil {
				return err
			}
			return s.printResource(raw, identityKind)
		})
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "The name of the identity.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	return cmd
}

func newIdentityListCmd(env Env) *cobra.Command {
	var rg string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List the identities of a resource group.",
		Example: `  arca identity list -g MyResourceGroup -o table`,
		Args:    cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "resource-group"); err != nil {
			return err
		}
		return o.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			items, err := s.list(ctx, withAPIVersion(identityPath(info, rg, "")))
			if err != nil {
				return err
			}
			return s.printList(items, identityKind)
		})
	}
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	return cmd
}

func newIdentityDeleteCmd(env Env) *cobra.Command {
	var name, rg string
	cmd := &cobra.Command{
		Use:     "delete",
		Short:   "Delete an identity and its federated credentials; its tokens stop working.",
		Example: `  arca identity delete -g MyResourceGroup -n MyACRCacheIdentity`,
		Args:    cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "name", "resource-group"); err != nil {
			return err
		}
		return o.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			_, err := s.call(ctx, http.MethodDelete, withAPIVersion(identityPath(info, rg, name)), nil)
			return err
		})
	}
	cmd.Flags().StringVarP(&name, "name", "n", "", "The name of the identity.")
	cmd.Flags().StringVarP(&rg, "resource-group", "g", "", "Name of resource group.")
	return cmd
}

func newFICCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "federated-credential",
		Short: "Manage an identity's federated credentials: which OIDC issuer's tokens (issuer, subject, audience) prove the identity",
	}
	type ficFlags struct{ identity, rg, name string }
	add := func(c *cobra.Command, f *ficFlags, named bool) *clientOpts {
		o := clientCmd(env, c)
		c.Flags().StringVar(&f.identity, "identity-name", "", "The name of the identity.")
		c.Flags().StringVarP(&f.rg, "resource-group", "g", "", "Name of resource group.")
		if named {
			c.Flags().StringVarP(&f.name, "name", "n", "", "The name of the federated credential.")
		}
		return o
	}
	path := func(info *serverInfo, f ficFlags) string {
		p := identityPath(info, f.rg, f.identity) + "/federatedIdentityCredentials"
		if f.name != "" {
			p += "/" + pathEscape(f.name)
		}
		return p
	}

	var cf ficFlags
	var issuer, subject string
	var audiences []string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create or update a federated credential.",
		Example: `  arca identity federated-credential create --identity-name MyACRCacheIdentity -g MyResourceGroup -n downstream \
    --issuer https://oidc.example.com --subject system:serviceaccount:arca:arca --audiences api://AzureADTokenExchange`,
		Args: cobra.NoArgs,
	}
	co := add(create, &cf, true)
	create.Flags().StringVar(&issuer, "issuer", "", "The OIDC issuer URL (https; http only on loopback).")
	create.Flags().StringVar(&subject, "subject", "", "The sub claim the tokens carry.")
	create.Flags().StringSliceVar(&audiences, "audiences", nil, "The aud claim the tokens carry (default api://AzureADTokenExchange).")
	create.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "identity-name", "resource-group", "name", "issuer", "subject"); err != nil {
			return err
		}
		return co.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			body := map[string]any{"properties": map[string]any{"issuer": issuer, "subject": subject, "audiences": audiences}}
			raw, err := s.call(ctx, http.MethodPut, withAPIVersion(path(info, cf)), body)
			if err != nil {
				return err
			}
			return s.printResource(raw, ficKind)
		})
	}

	var sf ficFlags
	show := &cobra.Command{Use: "show", Short: "Show a federated credential.", Args: cobra.NoArgs}
	so := add(show, &sf, true)
	show.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "identity-name", "resource-group", "name"); err != nil {
			return err
		}
		return so.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			raw, err := s.call(ctx, http.MethodGet, withAPIVersion(path(info, sf)), nil)
			if err != nil {
				return err
			}
			return s.printResource(raw, ficKind)
		})
	}

	var lf ficFlags
	list := &cobra.Command{Use: "list", Short: "List an identity's federated credentials.", Args: cobra.NoArgs}
	lo := add(list, &lf, false)
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "identity-name", "resource-group"); err != nil {
			return err
		}
		return lo.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			items, err := s.list(ctx, withAPIVersion(path(info, lf)))
			if err != nil {
				return err
			}
			return s.printList(items, ficKind)
		})
	}

	var df ficFlags
	var yes bool
	del := &cobra.Command{Use: "delete", Short: "Delete a federated credential.", Args: cobra.NoArgs}
	do := add(del, &df, true)
	del.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
	del.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "identity-name", "resource-group", "name"); err != nil {
			return err
		}
		if err := confirm(env, "Are you sure you want to perform this operation?", yes); err != nil {
			return err
		}
		return do.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			_, err := s.call(ctx, http.MethodDelete, withAPIVersion(path(info, df)), nil)
			return err
		})
	}
	cmd.AddCommand(create, show, list, del)
	return cmd
}

func newRoleCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{Use: "role", Short: "Manage role assignments (az role)"}
	ra := &cobra.Command{
		Use:   "assignment",
		Short: "Grant identities data-plane roles on registries or repositories (az role assignment)",
	}
	ra.AddCommand(newRoleAssignmentCreateCmd(env), newRoleAssignmentListCmd(env), newRoleAssignmentDeleteCmd(env))
	cmd.AddCommand(ra)
	return cmd
}

// printRoleAssignments adds roleDefinitionName, as az prints it.
func (s *session) printRoleAssignments(items []json.RawMessage, one bool) error {
	out := make([]any, 0, len(items))
	for _, raw := range items {
		m, err := decodeResource(raw, roleKind.keys...)
		if err != nil {
			return err
		}
		if r, ok := auth.LookupRole(str(m, "roleDefinitionId")); ok {
			m["roleDefinitionName"] = r.Name
		}
		m["canDelegate"] = nil
		out = append(out, m)
	}
	s.out.table = roleKind.table
	if one && len(out) == 1 {
		return s.out.print(out[0])
	}
	return s.out.print(out)
}

func roleAssignmentsPath(scope string) string {
	return strings.TrimSuffix(scope, "/") + "/providers/Microsoft.Authorization/roleAssignments"
}

// checkScope refuses a scope that is not an ARM id (it is put in a URL path).
func checkScope(scope string) error {
	if !strings.HasPrefix(scope, "/subscriptions/") || strings.ContainsAny(scope, "?#% \t\n") {
		return fmt.Errorf("--scope %q: want an ARM resource id such as /subscriptions/{id}/resourceGroups/{group}/providers/Microsoft.ContainerRegistry/registries/{name}[/repositories/{repository}]", scope)
	}
	return nil
}

func newRoleAssignmentCreateCmd(env Env) *cobra.Command {
	var role, assignee, scope, description, condition, conditionVersion string
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Assign a role to a principal at a scope.",
		Example: `  arca role assignment create --role "Container Registry Repository Reader" \
    --assignee "$IDENTITY_PRINCIPAL_ID" --scope "$UPSTREAM_ID/repositories/myapp"
  arca role assignment create --role "Container Registry Repository Writer" \
    --assignee "$IDENTITY_PRINCIPAL_ID" --scope "$REGISTRY_ID" --condition-version 2.0 \
    --condition "@Resource[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team-a/'"`,
		Args: cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if err := requireFlags(cmd, "role", "scope"); err != nil {
			return err
		}
		if assignee == "" {
			return errors.New("the following arguments are required: --assignee")
		}
		if err := checkScope(scope); err != nil {
			return err
		}
		if condition != "" && conditionVersion == "" {
			conditionVersion = auth.ConditionVersion // as az
		}
		r, ok := auth.LookupRole(role)
		if !ok {
			return fmt.Errorf("Role '%s' doesn't exist.", role)
		}
		return o.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			body := map[string]any{"properties": map[string]any{
				"roleDefinitionId": "/subscriptions/" + info.SubscriptionID + "/providers/Microsoft.Authorization/roleDefinitions/" + r.GUID,
				"principalId":      assignee, "description": description, "condition": condition, "conditionVersion": conditionVersion}}
			raw, err := s.call(ctx, http.MethodPut, withAPIVersion(roleAssignmentsPath(scope)+"/"+uuid.NewString()), body)
			if err != nil {
				return err
			}
			return s.printRoleAssignments([]json.RawMessage{raw}, true)
		})
	}
	cmd.Flags().StringVar(&role, "role", "", "Role name or id: AcrPull, AcrPush, AcrDelete, Container Registry Repository Reader|Writer|Contributor.")
	cmd.Flags().StringVar(&assignee, "assignee", "", "The principal id of the identity.")
	cmd.Flags().StringVar(&assignee, "assignee-object-id", "", "The principal id of the identity (as --assignee).")
	cmd.Flags().StringVar(&scope, "scope", "", "A registry id, or <registry id>/repositories/<repository> (name, prefix/* or *).")
	cmd.Flags().StringVar(&description, "description", "", "Description of the assignment.")
	cmd.Flags().StringVar(&condition, "condition", "", "ABAC condition on repository names (ActionMatches, @Request/@Resource[Microsoft.ContainerRegistry/registries/repositories:name] with String* operators, AND/OR/NOT).")
	cmd.Flags().StringVar(&conditionVersion, "condition-version", "", "Version of the condition syntax: 2.0 (the default with --condition).")
	return cmd
}

// findAssignments lists assignments at or below scope (the subscription
// if empty) of assignee and role, when given.
func findAssignments(ctx context.Context, s *session, info *serverInfo, scope, assignee, role string) ([]json.RawMessage, error) {
	if scope == "" {
		scope = "/subscriptions/" + info.SubscriptionID
	} else if err := checkScope(scope); err != nil {
		return nil, err
	}
	p := withAPIVersion(roleAssignmentsPath(scope))
	if assignee != "" {
		p += "&$filter=" + url.QueryEscape("principalId eq '"+assignee+"'")
	}
	items, err := s.list(ctx, p)
	if err != nil || role == "" {
		return items, err
	}
	want, ok := auth.LookupRole(role)
	if !ok {
		return nil, fmt.Errorf("Role '%s' doesn't exist.", role)
	}
	var out []json.RawMessage
	for _, raw := range items {
		var a struct {
			Properties struct {
				RoleDefinitionID string `json:"roleDefinitionId"`
			} `json:"properties"`
		}
		if json.Unmarshal(raw, &a) == nil {
			if r, ok := auth.LookupRole(a.Properties.RoleDefinitionID); ok && r.GUID == want.GUID {
				out = append(out, raw)
			}
		}
	}
	return out, nil
}

func newRoleAssignmentListCmd(env Env) *cobra.Command {
	var role, assignee, scope string
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List role assignments (at or below --scope; the whole subscription by default).",
		Example: `  arca role assignment list --assignee "$IDENTITY_PRINCIPAL_ID" -o table`,
		Args:    cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		return o.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			items, err := findAssignments(ctx, s, info, scope, assignee, role)
			if err != nil {
				return err
			}
			return s.printRoleAssignments(items, false)
		})
	}
	cmd.Flags().StringVar(&role, "role", "", "Only assignments of this role.")
	cmd.Flags().StringVar(&assignee, "assignee", "", "Only assignments of this principal id.")
	cmd.Flags().StringVar(&scope, "scope", "", "Only assignments at or below this scope.")
	cmd.Flags().Bool("all", false, "Accepted for az compatibility (arca lists the whole subscription by default).")
	return cmd
}

func newRoleAssignmentDeleteCmd(env Env) *cobra.Command {
	var role, assignee, scope string
	var ids []string
	cmd := &cobra.Command{
		Use:   "delete",
		Short: "Delete role assignments by --ids, or those matching --role, --assignee and --scope.",
		Example: `  arca role assignment delete --role "Container Registry Repository Reader" \
    --assignee "$IDENTITY_PRINCIPAL_ID" --scope "$UPSTREAM_ID/repositories/myapp"`,
		Args: cobra.NoArgs,
	}
	o := clientCmd(env, cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if len(ids) == 0 && role == "" && assignee == "" && scope == "" {
			return errors.New("give --ids, or at least one of --role, --assignee and --scope")
		}
		return o.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			if len(ids) == 0 {
				items, err := findAssignments(ctx, s, info, scope, assignee, role)
				if err != nil {
					return err
				}
				for _, raw := range items {
					var a struct {
						ID         string `json:"id"`
						Properties struct {
							Scope string `json:"scope"`
						} `json:"properties"`
					}
					// az deletes the assignments exactly at --scope.
					if json.Unmarshal(raw, &a) == nil && (scope == "" || strings.EqualFold(strings.TrimSuffix(a.Properties.Scope, "/"), strings.TrimSuffix(scope, "/"))) {
						ids = append(ids, a.ID)
					}
				}
				if len(ids) == 0 {
					warn(env, "No matched assignments were found to delete")
					return nil
				}
			}
			for _, id := range ids {
				if err := checkScope(id); err != nil {
					return err
				}
				if _, err := s.call(ctx, http.MethodDelete, withAPIVersion(id), nil); err != nil {
					return err
				}
			}
			return nil
		})
	}
	cmd.Flags().StringVar(&role, "role", "", "Role of the assignments to delete.")
	cmd.Flags().StringVar(&assignee, "assignee", "", "Principal id of the assignments to delete.")
	cmd.Flags().StringVar(&scope, "scope", "", "Scope of the assignments to delete.")
	cmd.Flags().StringSliceVar(&ids, "ids", nil, "Ids of role assignments to delete.")
	return cmd
}
