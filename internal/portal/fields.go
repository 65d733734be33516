package portal

import (
	"errors"
	"strings"

	"github.com/arcacache/arca/internal/rules"
)

// fieldOf names the form field an API error is about, so the message is
// shown next to it: the property the message starts with, else the one
// the code concerns, else "" (shown at the top of the form).
func fieldOf(err *armError) string {
	byProperty := []struct{ prop, field string }{
		{"sourceRepository", "source"},
		{"targetRepository", "target"},
		{"artifactSyncFilters.tags", "tags"},
		{"artifactSyncFilters.platforms", "platforms"},
		{"artifactSyncFilters.imageTypes", "imageTypes"},
		{"artifactSyncFilters.artifactTypes", "artifactTypes"},
		{"artifactSyncFilters", "syncMode"},
		{"syncReferrers", "referrers"},
		{"syncMode", "syncMode"},
		{"credentialSetResourceId", "credentialSet"},
		{"loginServer", "loginServer"},
		{"authCredentials[0].usernameSecretIdentifier", "username"},
		{"authCredentials[0].passwordSecretIdentifier", "password"},
	}
	for _, p := range byProperty {
		if strings.HasPrefix(err.Message, p.prop) {
			return p.field
		}
	}
	switch err.Code {
	case "InvalidResourceName":
		return "name"
	case "WildcardCacheRuleConflict", "CacheRuleTargetConflict", "TargetRepositoryAlreadyPresentInRegistry",
		"TargetRepositoryPrefixMatchesExistingRegistries", "PropertyChangeNotAllowed":
		return "target"
	case "EnforceDockerAuthentication", "InvalidCredentialSetResourceId", "CredentialSetNotFound", "CredentialSetLoginServerMismatch":
		return "credentialSet"
	case "InvalidLoginServer":
		return "loginServer"
	case "InvalidSecretIdentifier":
		return "password"
	case "InvalidArtifactSyncConfiguration":
		return "syncMode"
	}
	return ""
}

// checkName runs the API's own name check on a form's name before it
// goes into the resource path (an empty name would address the collection).
func checkName(fe formErrors, field, noun, name string) bool {
	var re *rules.Error
	if err := rules.ValidateName(noun, name); errors.As(err, &re) {
		fe[field] = "(" + re.Code + ") " + re.Message
		return false
	}
	return true
}

// formErrors are a form's messages by field ("" for the form as a whole).
type formErrors map[string]string

// add records err under its field (prefix names a sub-form's fields);
// it reports false for errors that are not the API's answer.
func (fe formErrors) add(err error, prefix string) bool {
	var ae *armError
	if !errors.As(err, &ae) || ae.Status >= 500 {
		return false
	}
	f := fieldOf(ae)
	if f != "" {
		f = prefix + f
	}
	fe[f] = "(" + ae.Code + ") " + ae.Message
	return true
}
