// Package rules is the domain of cache rules and credential sets: what makes
// one valid on its own and next to the others of its registry, how a tag
// filter query is read, and the index the data plane uses to find the rule
// serving a repository. It does no I/O: callers hand in what it needs.
package rules

import "fmt"

// Error is a validation failure. Code is the ARM error code the management
// API returns (it maps codes to HTTP statuses); Message names the field and
// the rule that was broken.
type Error struct {
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errorf(code, format string, a ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, a...)}
}

// Error codes. Where ACR's code is known (spec 2.7) it is used verbatim;
// the others are arca's, named in ARM's style.
const (
	CodeInvalidName             = "InvalidResourceName"
	CodeInvalidRepository       = "InvalidRepositoryName"
	CodeInvalidWildcard         = "InvalidWildcardCacheRule"
	CodeWildcardOverlap         = "WildcardCacheRuleConflict"
	CodeTargetConflict          = "CacheRuleTargetConflict"
	CodeTargetPresent           = "TargetRepositoryAlreadyPresentInRegistry"
	CodeTargetPrefixPresent     = "TargetRepositoryPrefixMatchesExistingRegistries"
	CodeQuotaExceeded           = "QuotaExceeded"
	CodeDockerAuth              = "EnforceDockerAuthentication"
	CodeInvalidCredentialSetID  = "InvalidCredentialSetResourceId"
	CodeCredentialSetNotFound   = "CredentialSetNotFound"
	CodeLoginServerMismatch     = "CredentialSetLoginServerMismatch"
	CodeInvalidSync             = "InvalidArtifactSyncConfiguration"
	CodeInvalidLoginServer      = "InvalidLoginServer"
	CodeInvalidSecretIdentifier = "InvalidSecretIdentifier"
	CodeInvalidAuthCredentials  = "InvalidAuthCredentials"
	CodeInvalidIdentity         = "InvalidIdentity"
	CodeCredentialSetInUse      = "CredentialSetInUse"
	CodePropertyChange          = "PropertyChangeNotAllowed"
	CodeInvalidRetention        = "InvalidRetentionDays"
)

// Messages ACR returns verbatim (spec 2.7).
const (
	msgNaming = "Repository names should follow the standardized docker repository naming conventions. " +
		"All characters should be lowercase. For more information, please visit https://aka.ms/acr/cache."
	// MsgDockerAuth is ACR's EnforceDockerAuthentication message.
	MsgDockerAuth = "Cannot create cache rule pointing to Docker Hub without credentials. " +
		"Please add a credential set to cache rule. Learn more: https://aka.ms/acr/cache-auth"
)
