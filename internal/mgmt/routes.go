package mgmt

import (
	"fmt"
	"net/http"
)

// Route names: what parse makes of a path (request.route).
const (
	routeInfo                = "info"
	routePrincipals          = "principals"
	routePrincipal           = "principal"
	routeAudit               = "audit"
	routeBackup              = "backup"
	routeIdentities          = "identities"
	routeIdentity            = "identity"
	routeResetCredential     = "resetCredential"
	routeFICs                = "federatedIdentityCredentials"
	routeFIC                 = "federatedIdentityCredential"
	routeRoleAssignments     = "roleAssignments"
	routeRoleAssignment      = "roleAssignment"
	routeOperationResult     = "operationResults"
	routeCheckName           = "checkNameAvailability"
	routeRegistries          = "registries"
	routeRegistry            = "registry"
	routeListUsages          = "listUsages"
	routeEstimate            = "checkCacheRuleArtifactSyncEstimate"
	routeGarbageCollect      = "garbageCollect"
	routeListKeyVaultSecrets = "listKeyVaultSecrets"
	routeRegistryOperation   = "registryOperationStatus"
	routeListCredentials     = "listCredentials"
	routeRegenerate          = "regenerateCredential"
	routeGenerateCredentials = "generateCredentials"
	routeScopeMaps           = "scopeMaps"
	routeScopeMap            = "scopeMap"
	routeTokens              = "tokens"
	routeToken               = "token"
	routeCacheRules          = "cacheRules"
	routeCacheRule           = "cacheRule"
	routeCacheRuleOperation  = "cacheRuleOperationStatus"
	routeSync                = "sync"
	routePurge               = "purge"
	routeCredentialSets      = "credentialSets"
	routeCredentialSet       = "credentialSet"
	routeCredentialSetOp     = "credentialSetOperationStatus"
)

// handle serves one routed, authorized call.
type handle func(h *Handler, w http.ResponseWriter, req *request) error

// route is what a management route answers and who may call it.
type route struct {
	// access is the level each method needs (a method not listed answers
	// 405; levelNone is refused).
	access map[string]int
	// tenant routes are above every registry: callers scoped to one
	// registry are refused whatever their role.
	tenant bool
	serve  handle
}

const (
	mGet, mPut, mPatch, mPost, mDel = http.MethodGet, http.MethodPut, http.MethodPatch, http.MethodPost, http.MethodDelete
)

// crud is the access of an ARM resource: read it, change it at level.
func crud(level int) map[string]int {
	return map[string]int{mGet: levelRead, mPut: level, mPatch: level, mDel: level}
}

var readOnly = map[string]int{mGet: levelRead}

// routes is every management route and its authorization decision: the
// server serves only what is here (closed by default), and
// TestEveryManagementRouteHasADecision checks each entry. Actions that
// return or mint secrets (listCredentials, regenerateCredential,
// generateCredentials, resetCredential) or change state are POSTs that
// need write, never read, as in ARM.
var routes = map[string]route{
	// arca's own API (/arca/v1/...).
	routeInfo:       {access: map[string]int{mGet: levelSignedIn}, serve: (*Handler).info},
	routePrincipals: {access: map[string]int{mGet: levelOwner}, serve: (*Handler).principals},
	routePrincipal:  {access: map[string]int{mGet: levelOwner, mPut: levelOwner, mDel: levelOwner}, serve: (*Handler).principals},
	routeAudit:      {access: map[string]int{mGet: levelOwner}, serve: (*Handler).auditLog},
	// The whole metadata store (secret hashes included).
	routeBackup: {access: map[string]int{mGet: levelOwner}, serve: (*Handler).backup},

	// Microsoft.ManagedIdentity and Microsoft.Authorization.
	routeIdentities:      {access: readOnly, tenant: true, serve: (*Handler).identities},
	routeIdentity:        {access: crud(levelOwner), tenant: true, serve: (*Handler).identities},
	routeResetCredential: {access: map[string]int{mPost: levelOwner}, tenant: true, serve: (*Handler).identities},
	routeFICs:            {access: readOnly, tenant: true, serve: (*Handler).identities},
	routeFIC:             {access: map[string]int{mGet: levelRead, mPut: levelOwner, mDel: levelOwner}, tenant: true, serve: (*Handler).identities},
	routeRoleAssignments: {access: readOnly, tenant: true, serve: (*Handler).roleAssignments},
	routeRoleAssignment:  {access: map[string]int{mGet: levelRead, mPut: levelOwner, mDel: levelOwner}, tenant: true, serve: (*Handler).roleAssignments},

	// Microsoft.ContainerRegistry. operationResults names no registry: the
	// handler checks read access to the operation's.
	routeOperationResult: {access: readOnly, serve: (*Handler).operationResult},
	routeCheckName:       {access: map[string]int{mPost: levelRead}, serve: (*Handler).checkNameAvailability},
	routeRegistries:      {access: readOnly, serve: (*Handler).getRegistries},
	routeRegistry:        {access: crud(levelWrite), serve: (*Handler).registryResource},
	routeListUsages:      {access: readOnly, serve: (*Handler).listUsages},
	// An estimate changes nothing (ARM's check* actions are reads).
	routeEstimate:            {access: map[string]int{mPost: levelRead}, serve: (*Handler).estimate},
	routeGarbageCollect:      {access: map[string]int{mGet: levelRead, mPost: levelWrite}, serve: (*Handler).garbageCollect},
	routeListKeyVaultSecrets: {access: map[string]int{mPost: levelWrite}, serve: (*Handler).listKeyVaultSecrets},
	routeRegistryOperation:   {access: readOnly, serve: (*Handler).operationStatus},
	routeListCredentials:     {access: map[string]int{mPost: levelWrite}, serve: (*Handler).adminCredentials},
	routeRegenerate:          {access: map[string]int{mPost: levelWrite}, serve: (*Handler).adminCredentials},
	routeGenerateCredentials: {access: map[string]int{mPost: levelWrite}, serve: (*Handler).generateCredentials},
	routeScopeMaps:           {access: readOnly, serve: (*Handler).scopeMaps},
	routeScopeMap:            {access: crud(levelWrite), serve: (*Handler).scopeMaps},
	routeTokens:              {access: readOnly, serve: (*Handler).tokens},
	routeToken:               {access: crud(levelWrite), serve: (*Handler).tokens},
	routeCacheRules:          {access: readOnly, serve: (*Handler).cacheRules},
	routeCacheRule:           {access: crud(levelWrite), serve: (*Handler).cacheRules},
	routeCacheRuleOperation:  {access: readOnly, serve: (*Handler).operationStatus},
	routeSync:                {access: map[string]int{mPost: levelWrite}, serve: (*Handler).syncNow},
	routePurge:               {access: map[string]int{mPost: levelWrite}, serve: (*Handler).purge},
	routeCredentialSets:      {access: readOnly, serve: (*Handler).credentialSets},
	routeCredentialSet:       {access: crud(levelWrite), serve: (*Handler).credentialSets},
	routeCredentialSetOp:     {access: readOnly, serve: (*Handler).operationStatus},
}

// authorize decides whether req's caller may make the call: the one
// place every management route's decision is taken.
func authorize(req *request) error {
	rt, ok := routes[req.route]
	if !ok {
		// A path parse names but the table lacks: refused (and logged
		// as the bug it is).
		return fmt.Errorf("mgmt: route %q of %s has no authorization decision", req.route, req.r.URL.Path)
	}
	level, ok := rt.access[req.r.Method]
	if !ok {
		return errMethod(req.r)
	}
	if (rt.tenant && req.caller.Registry != "") || !req.caller.allows(level, req.registry) {
		return errForbidden(req.caller, req.r)
	}
	return nil
}
