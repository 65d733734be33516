package mgmt

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Every management route and method has an authorization decision, the
// documented one, and the server keeps to it: no caller gets in without
// a token, a principal without a role on the registry (or with only a
// data-plane role) is refused, a Reader only reads, and actions that
// return or mint secrets need write. The routes come from the table the
// server serves from (routes.go), so a route added there without a test
// path and a documented level fails here.
func TestEveryManagementRouteHasADecision(t *testing.T) {
	sub := "/subscriptions/" + testSub
	reg := base("teamreg")
	ids := sub + "/resourceGroups/" + testRG + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
	paths := map[string]string{
		routeInfo:                "/arca/v1/info",
		routePrincipals:          "/arca/v1/principals",
		routePrincipal:           "/arca/v1/principals/someone",
		routeAudit:               "/arca/v1/audit",
		routeBackup:              "/arca/v1/backup/metadata",
		routeIdentities:          ids,
		routeIdentity:            ids + "/id1",
		routeResetCredential:     ids + "/id1/resetCredential",
		routeFICs:                ids + "/id1/federatedIdentityCredentials",
		routeFIC:                 ids + "/id1/federatedIdentityCredentials/fic1",
		routeRoleAssignments:     reg + "/providers/Microsoft.Authorization/roleAssignments",
		routeRoleAssignment:      reg + "/providers/Microsoft.Authorization/roleAssignments/0b7a6f0e-0000-4000-8000-000000000001",
		routeOperationResult:     sub + "/providers/Microsoft.ContainerRegistry/locations/local/operationResults/op1",
		routeCheckName:           sub + "/providers/Microsoft.ContainerRegistry/checkNameAvailability",
		routeRegistries:          sub + "/resourceGroups/" + testRG + "/providers/Microsoft.ContainerRegistry/registries",
		routeRegistry:            reg,
		routeListUsages:          reg + "/listUsages",
		routeEstimate:            reg + "/checkCacheRuleArtifactSyncEstimate",
		routeGarbageCollect:      reg + "/garbageCollect",
		routeListKeyVaultSecrets: reg + "/listKeyVaultSecrets",
		routeRegistryOperation:   reg + "/operationStatuses/op1",
		routeListCredentials:     reg + "/listCredentials",
		routeRegenerate:          reg + "/regenerateCredential",
		routeGenerateCredentials: reg + "/generateCredentials",
		routeScopeMaps:           reg + "/scopeMaps",
		routeScopeMap:            reg + "/scopeMaps/map1",
		routeTokens:              reg + "/tokens",
		routeToken:               reg + "/tokens/tok1",
		routeCacheRules:          reg + "/cacheRules",
		routeCacheRule:           reg + "/cacheRules/rule1",
		routeCacheRuleOperation:  reg + "/cacheRules/rule1/operationStatuses/op1",
		routeSync:                reg + "/cacheRules/rule1/sync",
		routePurge:               reg + "/cacheRules/rule1/purge",
		routeCredentialSets:      reg + "/credentialSets",
		routeCredentialSet:       reg + "/credentialSets/cred1",
		routeCredentialSetOp:     reg + "/credentialSets/cred1/operationStatuses/op1",
	}
	// The documented decisions. Reads are GETs, plus the two check*
	// actions that change nothing; every other call needs write (or
	// Owner: principals, identities, role assignments, audit, backup).
	reads := map[string]bool{"POST " + routeCheckName: true, "POST " + routeEstimate: true}
	owner := map[string]bool{routeIdentity: true, routeResetCredential: true, routeFIC: true, routeRoleAssignment: true}
	want := func(route, method string) int {
		switch {
		case route == routeInfo:
			return levelSignedIn
		case route == routePrincipals || route == routePrincipal || route == routeAudit || route == routeBackup:
			return levelOwner // reading them is an Owner's too
		case method == http.MethodGet || reads[method+" "+route]:
			return levelRead
		case owner[route]:
			return levelOwner
		}
		return levelWrite
	}

	f := newFixture(t)
	tokens := map[string]string{
		"reader":          f.newPrincipalToken("reader", RoleReader, ""),
		"teamreg reader":  f.newPrincipalToken("teamreader", RoleReader, "teamreg"),
		"contributor":     f.newPrincipalToken("contributor", RoleContributor, ""),
		"owner elsewhere": f.newPrincipalToken("otherowner", RoleOwner, "default"),
		"AcrPull":         f.newPrincipalToken("puller", RoleAcrPull, ""),
	}
	for p := range paths {
		if _, ok := routes[p]; !ok {
			t.Errorf("test path for %s, which is not a route", p)
		}
	}
	for name, rt := range routes {
		p, ok := paths[name]
		if !ok {
			t.Errorf("route %s has no test path", name)
			continue
		}
		if rt.serve == nil || len(rt.access) == 0 {
			t.Errorf("route %s serves nothing", name)
		}
		for method, level := range rt.access {
			call := method + " " + name
			r := httptest.NewRequest(method, p+"?api-version=2025-09-01-preview", nil)
			req, err := f.h.parse(r)
			if err != nil || req.route != name {
				t.Errorf("%s %s parses as %v (%v), want %s", method, p, req, err, name)
				continue
			}
			w := want(name, method)
			if level != w {
				t.Errorf("%s needs level %d, documented %d", call, level, w)
			}
			if level == levelNone {
				t.Errorf("%s has no decision", call)
			}

			res := f.doAuth(method, p, nil, "")
			if res.status != http.StatusUnauthorized || res.errorCode() != "AuthenticationFailed" ||
				!strings.HasPrefix(res.header.Get("WWW-Authenticate"), "Bearer ") {
				t.Errorf("%s without a token: %d %q, WWW-Authenticate %q", call, res.status, res.errorCode(), res.header.Get("WWW-Authenticate"))
			}
			// Who must be refused (by the documented level, not the
			// table's), and who must get past authorization.
			scoped := req.registry != "" || rt.tenant || w == levelOwner
			refused := map[string]bool{
				"AcrPull":         w != levelSignedIn,
				"owner elsewhere": scoped,
				"reader":          w > levelRead,
				"teamreg reader":  w > levelRead || rt.tenant,
				"contributor":     w > levelWrite,
			}
			for who, deny := range refused {
				if !deny && method != http.MethodGet && !reads[call] {
					continue // a permitted change is not made here
				}
				res := f.doAuth(method, p, nil, "Bearer "+tokens[who])
				forbidden := res.status == http.StatusForbidden && res.errorCode() == "AuthorizationFailed"
				switch {
				case deny && !forbidden:
					t.Errorf("%s by %s: %d %s, want 403 AuthorizationFailed", call, who, res.status, res.body)
				case !deny && (res.status == http.StatusUnauthorized || res.status == http.StatusForbidden):
					t.Errorf("%s by %s refused: %d %s", call, who, res.status, res.body)
				}
				// A registry the caller has no role on is refused the
				// same whether it exists or not (as ARM does): a 404
				// would tell which names exist.
				if deny && req.registry != "" && !rt.tenant && strings.HasPrefix(p, reg) {
					res := f.doAuth(method, base("nosuchregistry")+strings.TrimPrefix(p, reg), nil, "Bearer "+tokens[who])
					if res.status != http.StatusForbidden || res.errorCode() != "AuthorizationFailed" {
						t.Errorf("%s of a registry that does not exist by %s: %d %s, want 403 AuthorizationFailed", call, who, res.status, res.body)
					}
				}
			}
		}
	}
	if _, ok := routes[""]; ok {
		t.Error("a route without a name")
	}
}
