package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

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

// identityAt is the path of identity name of rg (the collection for "").
func identityAt(rg, name string) pathFunc {
	return infoAt(func(info *serverInfo) string { return identityPath(info, rg, name) })
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
	cmd.AddCommand(newIdentityCreateCmd(env), newIdentityShowCmd(env), newIdentityListCmd(env), newIdentityDeleteCmd(env), newFICCmd(env),
		newIdentityCredentialCmd(env))
	return cmd
}

func newIdentityCreateCmd(env Env) *cobra.Command {
	var name, rg, location string
	var tags []string
	cmd := clientRun(env, &cobra.Command{
		Use:     "create",
		Short:   "Create an identity (or update the tags of the one of this name).",
		Example: `  arca identity create -g MyResourceGroup -n MyACRCacheIdentity`,
	}, []string{"name", "resource-group"}, func(o *clientOpts, cmd *cobra.Command) error {
		body := map[string]any{}
		if location != "" {
			body["location"] = location
		}
		if tags != nil {
			body["tags"] = parseTags(tags)
		}
		return o.callAt(cmd, identityAt(rg, name), http.MethodPut, body, identityKind)
	})
	identityFlags(cmd, &name, &rg)
	cmd.Flags().StringVarP(&location, "location", "l", "", "Location (recorded).")
	cmd.Flags().StringArrayVar(&tags, "tags", nil, "Space-separated tags: key[=value].")
	return cmd
}

// identityFlags adds -n (when name is set) and -g.
func identityFlags(cmd *cobra.Command, name, rg *string) {
	if name != nil {
		cmd.Flags().StringVarP(name, "name", "n", "", "The name of the identity.")
	}
	cmd.Flags().StringVarP(rg, "resource-group", "g", "", "Name of resource group.")
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

// secretKind prints a reset client secret (az ad sp credential reset's
// appId/password/tenant, with arca's names).
var secretKind = resourceKind{"", nil, columnTable([]string{"clientId", "clientSecret", "tenantId", "endDateTime"}, func(_, _ map[string]any) {})}

// secretEnd is a reset secret's end as az ad sp credential reset takes
// it: --years from now (default 1), or --end-date, an RFC 3339 time or a
// date (midnight UTC at its start).
func secretEnd(now time.Time, years int, yearsSet bool, endDate string) (time.Time, error) {
	switch {
	case yearsSet && endDate != "":
		return time.Time{}, errors.New("usage error: --years | --end-date")
	case endDate != "":
		for _, layout := range []string{time.RFC3339, time.DateOnly} {
			if t, err := time.Parse(layout, endDate); err == nil {
				if !t.After(now) {
					return time.Time{}, fmt.Errorf("argument --end-date: %s is not in the future", endDate)
				}
				return t.UTC(), nil
			}
		}
		return time.Time{}, fmt.Errorf("argument --end-date: %q: want a date (2027-12-31) or an RFC 3339 time (2027-12-31T23:59:59Z)", endDate)
	case years <= 0:
		return time.Time{}, fmt.Errorf("argument --years: %d: want a positive number of years", years)
	}
	return now.UTC().AddDate(years, 0, 0), nil
}

func newIdentityCredentialCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credential",
		Short: "Manage an identity's client secret, for hosts with no OIDC issuer (arca extension)",
		Long: `An identity may have one client secret: with the identity's client id as the
user name it signs in as the identity (docker login, or a downstream arca's
credential set), with the rights of its role assignments, as a service
principal does at ACR. The server keeps only a slow hash of it: the secret is
shown once, by reset; a new reset replaces it and ends what signed in with the
previous one. A secret lasts a year unless --years or --end-date say
otherwise (as az ad sp credential reset); after its end sign-in is refused
(401, "the client secret has expired"), and a reset gives a new one.`,
	}
	var name, rg, endDate string
	var years int
	reset := clientRun(env, &cobra.Command{
		Use:   "reset",
		Short: "Generate a new client secret for the identity (shown once).",
		Example: `  arca identity credential reset -g MyResourceGroup -n MyACRCacheIdentity --query clientSecret -o tsv
  arca identity credential reset -g MyResourceGroup -n MyACRCacheIdentity --years 2
  arca identity credential reset -g MyResourceGroup -n MyACRCacheIdentity --end-date 2027-06-30`,
	}, []string{"name", "resource-group"}, func(o *clientOpts, cmd *cobra.Command) error {
		end, err := secretEnd(time.Now(), years, cmd.Flags().Changed("years"), endDate)
		if err != nil {
			return err
		}
		where := infoAt(func(info *serverInfo) string { return identityPath(info, rg, name) + "/resetCredential" })
		return o.callAt(cmd, where, http.MethodPost, map[string]any{"endDateTime": end.Format(time.RFC3339)}, secretKind)
	})
	identityFlags(reset, &name, &rg)
	reset.Flags().IntVar(&years, "years", 1, "Number of years for which the secret is valid.")
	reset.Flags().StringVar(&endDate, "end-date", "", "When the secret stops working: a date (2027-12-31, midnight UTC) or an RFC 3339 time (2027-12-31T23:59:59Z).")
	cmd.AddCommand(reset)
	return cmd
}

func newIdentityShowCmd(env Env) *cobra.Command {
	var name, rg string
	cmd := clientRun(env, &cobra.Command{
		Use:     "show",
		Short:   "Show an identity.",
		Example: `  arca identity show -g MyResourceGroup -n MyACRCacheIdentity --query principalId -o tsv`,
	}, []string{"name", "resource-group"}, func(o *clientOpts, cmd *cobra.Command) error {
		return o.callAt(cmd, identityAt(rg, name), http.MethodGet, nil, identityKind)
	})
	identityFlags(cmd, &name, &rg)
	return cmd
}

func newIdentityListCmd(env Env) *cobra.Command {
	var rg string
	cmd := clientRun(env, &cobra.Command{
		Use:     "list",
		Short:   "List the identities of a resource group.",
		Example: `  arca identity list -g MyResourceGroup -o table`,
	}, []string{"resource-group"}, func(o *clientOpts, cmd *cobra.Command) error {
		return o.listAt(cmd, identityAt(rg, ""), identityKind)
	})
	identityFlags(cmd, nil, &rg)
	return cmd
}

func newIdentityDeleteCmd(env Env) *cobra.Command {
	var name, rg string
	cmd := clientRun(env, &cobra.Command{
		Use:     "delete",
		Short:   "Delete an identity and its federated credentials; its tokens stop working.",
		Example: `  arca identity delete -g MyResourceGroup -n MyACRCacheIdentity`,
	}, []string{"name", "resource-group"}, func(o *clientOpts, cmd *cobra.Command) error {
		return o.callAt(cmd, identityAt(rg, name), http.MethodDelete, nil, identityKind)
	})
	identityFlags(cmd, &name, &rg)
	return cmd
}

func newFICCmd(env Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "federated-credential",
		Short: "Manage an identity's federated credentials: which OIDC issuer's tokens (issuer, subject, audience) prove the identity",
	}
	type ficFlags struct{ identity, rg, name string }
	flags := func(c *cobra.Command, f *ficFlags, named bool) *cobra.Command {
		c.Flags().StringVar(&f.identity, "identity-name", "", "The name of the identity.")
		c.Flags().StringVarP(&f.rg, "resource-group", "g", "", "Name of resource group.")
		if named {
			c.Flags().StringVarP(&f.name, "name", "n", "", "The name of the federated credential.")
		}
		return c
	}
	path := func(f *ficFlags) pathFunc {
		return infoAt(func(info *serverInfo) string {
			p := identityPath(info, f.rg, f.identity) + "/federatedIdentityCredentials"
			if f.name != "" {
				p += "/" + pathEscape(f.name)
			}
			return p
		})
	}
	one := []string{"identity-name", "resource-group", "name"}

	var cf ficFlags
	var issuer, subject string
	var audiences []string
	create := flags(clientRun(env, &cobra.Command{
		Use:   "create",
		Short: "Create or update a federated credential.",
		Example: `  arca identity federated-credential create --identity-name MyACRCacheIdentity -g MyResourceGroup -n downstream \
    --issuer https://oidc.example.com --subject system:serviceaccount:arca:arca --audiences api://AzureADTokenExchange`,
	}, append(one, "issuer", "subject"), func(o *clientOpts, cmd *cobra.Command) error {
		body := map[string]any{"properties": map[string]any{"issuer": issuer, "subject": subject, "audiences": audiences}}
		return o.callAt(cmd, path(&cf), http.MethodPut, body, ficKind)
	}), &cf, true)
	create.Flags().StringVar(&issuer, "issuer", "", "The OIDC issuer URL (https; http only on loopback).")
	create.Flags().StringVar(&subject, "subject", "", "The sub claim the tokens carry.")
	create.Flags().StringSliceVar(&audiences, "audiences", nil, "The aud claim the tokens carry (default api://AzureADTokenExchange).")

	var sf ficFlags
	show := flags(clientRun(env, &cobra.Command{Use: "show", Short: "Show a federated credential."}, one,
		func(o *clientOpts, cmd *cobra.Command) error {
			return o.callAt(cmd, path(&sf), http.MethodGet, nil, ficKind)
		}), &sf, true)

	var lf ficFlags
	list := flags(clientRun(env, &cobra.Command{Use: "list", Short: "List an identity's federated credentials."}, one[:2],
		func(o *clientOpts, cmd *cobra.Command) error { return o.listAt(cmd, path(&lf), ficKind) }), &lf, false)

	var df ficFlags
	var yes bool
	del := flags(clientRun(env, &cobra.Command{Use: "delete", Short: "Delete a federated credential."}, one,
		func(o *clientOpts, cmd *cobra.Command) error {
			if err := confirm(env, "Are you sure you want to perform this operation?", yes); err != nil {
				return err
			}
			return o.callAt(cmd, path(&df), http.MethodDelete, nil, ficKind)
		}), &df, true)
	del.Flags().BoolVarP(&yes, "yes", "y", false, "Do not prompt for confirmation.")
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
	cmd := clientRun(env, &cobra.Command{
		Use:   "create",
		Short: "Assign a role to a principal at a scope.",
		Example: `  arca role assignment create --role "Container Registry Repository Reader" \
    --assignee "$IDENTITY_PRINCIPAL_ID" --scope "$UPSTREAM_ID/repositories/myapp"
  arca role assignment create --role "Container Registry Repository Writer" \
    --assignee "$IDENTITY_PRINCIPAL_ID" --scope "$REGISTRY_ID" --condition-version 2.0 \
    --condition "@Resource[Microsoft.ContainerRegistry/registries/repositories:name] StringStartsWithIgnoreCase 'team-a/'"`,
	}, []string{"role", "scope"}, func(o *clientOpts, cmd *cobra.Command) error {
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
	})
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
	cmd := clientRun(env, &cobra.Command{
		Use:     "list",
		Short:   "List role assignments (at or below --scope; the whole subscription by default).",
		Example: `  arca role assignment list --assignee "$IDENTITY_PRINCIPAL_ID" -o table`,
	}, nil, func(o *clientOpts, cmd *cobra.Command) error {
		return o.withServer(cmd, func(ctx context.Context, s *session, info *serverInfo) error {
			items, err := findAssignments(ctx, s, info, scope, assignee, role)
			if err != nil {
				return err
			}
			return s.printRoleAssignments(items, false)
		})
	})
	cmd.Flags().StringVar(&role, "role", "", "Only assignments of this role.")
	cmd.Flags().StringVar(&assignee, "assignee", "", "Only assignments of this principal id.")
	cmd.Flags().StringVar(&scope, "scope", "", "Only assignments at or below this scope.")
	cmd.Flags().Bool("all", false, "Accepted for az compatibility (arca lists the whole subscription by default).")
	return cmd
}

func newRoleAssignmentDeleteCmd(env Env) *cobra.Command {
	var role, assignee, scope string
	var ids []string
	cmd := clientRun(env, &cobra.Command{
		Use:   "delete",
		Short: "Delete role assignments by --ids, or those matching --role, --assignee and --scope.",
		Example: `  arca role assignment delete --role "Container Registry Repository Reader" \
    --assignee "$IDENTITY_PRINCIPAL_ID" --scope "$UPSTREAM_ID/repositories/myapp"`,
	}, nil, func(o *clientOpts, cmd *cobra.Command) error {
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
	})
	cmd.Flags().StringVar(&role, "role", "", "Role of the assignments to delete.")
	cmd.Flags().StringVar(&assignee, "assignee", "", "Principal id of the assignments to delete.")
	cmd.Flags().StringVar(&scope, "scope", "", "Scope of the assignments to delete.")
	cmd.Flags().StringSliceVar(&ids, "ids", nil, "Ids of role assignments to delete.")
	return cmd
}
