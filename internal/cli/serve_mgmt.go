package cli

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/arcacache/arca/internal/mgmt"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/server"
)

// addManagementFlags adds `arca serve`'s management-plane settings.
func addManagementFlags(f *pflag.FlagSet, o *server.ManagementOptions, env Env) {
	f.StringVar(&o.SubscriptionID, "subscription-id", mgmt.DefaultSubscriptionID, "subscription ID in the management API's resource IDs")
	f.StringVar(&o.ResourceGroup, "resource-group", mgmt.DefaultResourceGroup, "resource group name in the management API's resource IDs")
	f.StringVar(&o.TenantID, "tenant-id", mgmt.DefaultTenantID, "tenant ID reported in credential sets' identities")
	f.StringVar(&o.ExternalURL, "external-url", "", "base URL clients reach arca at, for links in management responses (default: from each request)")
	f.StringArrayVar(&o.Registries, "registry", nil, "another registry, served on its own host names: NAME=host1,host2 (repeatable; the default registry serves every other host)")
	f.StringVar(&o.AdminToken, "admin-token", "", "management API bearer token, at least 128 bits of entropy (prefer ARCA_ADMIN_TOKEN); if unset, one is generated at first start, printed once, and its salted hash kept in the metadata store")
	f.IntVar(&o.MaxCacheRules, "max-cache-rules", rules.DefaultMaxRules, "most cache rules one registry may have")
	o.AdminTokenGenerated = func(token string) {
		fmt.Fprintf(env.Stderr, "arca: generated the management API admin token (shown only this once; only its salted hash is stored):\n\n    %s\n\n", token)
	}
}
