package mgmt

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// apiError is an ARM error: written as {"error":{"code","message"}}.
type apiError struct {
	Status  int
	Code    string
	Message string
	// withStatus adds ACR's top-level "status":"Failed" (seen on 404s).
	withStatus bool
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// Status and code of every error the management API returns. Codes in
// quotes are ACR's (spec 2.7) or ARM's own; the others are arca's where
// ACR's is unknown.
//
//	HTTP  Code                                             When
//	400   MissingApiVersionParameter                       no ?api-version=
//	400   InvalidApiVersionParameter                       api-version is not a date-shaped version
//	400   NoRegisteredProviderFound                        well-formed but unsupported api-version (message lists the supported ones)
//	401   AuthenticationFailed                             no Authorization: Bearer header
//	401   InvalidAuthenticationToken                       wrong admin token
//	404   SubscriptionNotFound                             subscription is not the configured one
//	404   ResourceGroupNotFound                            resource group is not the configured one
//	404   ResourceNotFound                                 registry, cache rule, credential set or operation absent
//	404   InvalidResourceType                              unknown path under a registry
//	405   MethodNotAllowed                                 verb not defined for the path
//	400   InvalidRequestContent                            body not JSON / wrong JSON types / property not in this api-version or not supported by arca
//	400   InvalidResourceName                              rule or set name not ^[a-zA-Z0-9-]*$ 5..50
//	400   InvalidRepositoryName                            bad sourceRepository/targetRepository (ACR's "standardized docker repository naming conventions" message; tags rejected)
//	400   InvalidWildcardCacheRule                         * other than trailing /* (or * alone as target), or source/target disagree
//	400   EnforceDockerAuthentication                      Docker Hub source without a credential set (ACR's message)
//	400   InvalidCredentialSetResourceId                   credentialSetResourceId not an ID of this registry's credential sets
//	400   CredentialSetNotFound                            the referenced credential set does not exist
//	400   CredentialSetLoginServerMismatch                 set's loginServer differs from the rule's source login server
//	400   InvalidArtifactSyncConfiguration                 sync options without ActiveSync, bad filter, bad KQL
//	400   InvalidIdentity                                  bad identity type or user-assigned identity ID
//	400   InvalidLoginServer                               bad loginServer
//	400   InvalidSecretIdentifier                          missing or unparsable secret reference
//	400   InvalidAuthCredentials                           authCredentials not exactly one "Credential1"
//	400   InvalidCredentialEndDate                         a client secret reset's endDateTime is not in the future
//	400   PropertyChangeNotAllowed                         changing a rule's source/target, or PATCHing loginServer
//	409   WildcardCacheRuleConflict                        wildcard target equal to / containing / inside another wildcard target
//	409   CacheRuleTargetConflict                          another rule has the same static target
//	409   TargetRepositoryAlreadyPresentInRegistry         static target is a repository with content (ACR's message)
//	409   TargetRepositoryPrefixMatchesExistingRegistries  wildcard target prefix covers repositories with content (ACR's message)
//	409   QuotaExceeded                                    registry already has the maximum number of rules (1,000 by default)
//	409   CredentialSetInUse                               deleting (or changing the loginServer of) a set rules use; names the rules
//	413   RequestTooLarge                                  body over 1 MiB
//	500   InternalServerError                              anything else (details only in the server log)
//	424   UpstreamRequestFailed                            on-demand sync could not reach or use the upstream
//	400   InvalidKeyVault                                  listKeyVaultSecrets: keyVault missing, or not a vault name or URL
//	424   KeyVaultAccessDenied                             listKeyVaultSecrets: the vault refused the identity (no list permission)
//	424   KeyVaultNotFound                                 listKeyVaultSecrets: the vault's host does not resolve
//	424   KeyVaultIdentityUnavailable                      listKeyVaultSecrets: the Azure identity could not get a token
//	424   KeyVaultRequestFailed                            listKeyVaultSecrets: any other failure reaching the vault
//	501   NotImplemented                                   estimate and on-demand sync on a server without active sync (and the like)
var ruleStatus = map[string]int{
	rules.CodeInvalidName:             http.StatusBadRequest,
	rules.CodeInvalidRepository:       http.StatusBadRequest,
	rules.CodeInvalidWildcard:         http.StatusBadRequest,
	rules.CodeDockerAuth:              http.StatusBadRequest,
	rules.CodeInvalidCredentialSetID:  http.StatusBadRequest,
	rules.CodeCredentialSetNotFound:   http.StatusBadRequest,
	rules.CodeLoginServerMismatch:     http.StatusBadRequest,
	rules.CodeInvalidSync:             http.StatusBadRequest,
	rules.CodeInvalidIdentity:         http.StatusBadRequest,
	rules.CodeInvalidLoginServer:      http.StatusBadRequest,
	rules.CodeInvalidSecretIdentifier: http.StatusBadRequest,
	rules.CodeInvalidAuthCredentials:  http.StatusBadRequest,
	rules.CodePropertyChange:          http.StatusBadRequest,
	rules.CodeWildcardOverlap:         http.StatusConflict,
	rules.CodeTargetConflict:          http.StatusConflict,
	rules.CodeTargetPresent:           http.StatusConflict,
	rules.CodeTargetPrefixPresent:     http.StatusConflict,
	rules.CodeQuotaExceeded:           http.StatusConflict,
	rules.CodeCredentialSetInUse:      http.StatusConflict,
}

func errBadRequest(code, msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: code, Message: msg}
}

func errNotFound(code, msg string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: code, Message: msg, withStatus: true}
}

// toAPIError maps err to the error to send; internal is true when err is
// not a client error (its text stays in the log).
func toAPIError(err error) (ae *apiError, internal bool) {
	if errors.As(err, &ae) {
		return ae, false
	}
	if errors.Is(err, metadata.ErrConflict) {
		return &apiError{Status: http.StatusConflict, Code: "Conflict", Message: "The request conflicts with a concurrent change; retry it."}, false
	}
	var re *rules.Error
	if errors.As(err, &re) {
		st, ok := ruleStatus[re.Code]
		if !ok {
			st = http.StatusBadRequest
		}
		return &apiError{Status: st, Code: re.Code, Message: re.Message}, false
	}
	return &apiError{Status: http.StatusInternalServerError, Code: "InternalServerError",
		Message: "The server encountered an internal error; see the arca server log."}, true
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	Status string `json:"status,omitempty"`
}

func writeError(w http.ResponseWriter, ae *apiError) {
	var b errorBody
	b.Error.Code, b.Error.Message = ae.Code, ae.Message
	if ae.withStatus {
		b.Status = "Failed"
	}
	writeJSON(w, ae.Status, b)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":{"code":"InternalServerError","message":"encoding the response failed"}}`)
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
