package mgmt

import (
	"fmt"
	"regexp"
	"strings"
)

// apiVersions are the versions ACR lists in api-supported-versions for
// credential sets (spec 2.1), all of which have cache rules and credential
// sets. Preview versions from 2025-09-01-preview on carry the artifact-sync
// properties (syncMode, syncReferrers, artifactSyncFilters) and the cache
// rule identity; arca accepts those on every preview version (2024-01-01-
// preview's different artifact-sync v1 shape is not supported) and rejects
// them, with InvalidRequestContent, on the GA versions, whose responses
// also leave them out.
var apiVersions = []string{
	"2023-01-01-preview", "2023-06-01-preview", "2023-07-01", "2023-08-01-preview", "2023-11-01-preview",
	"2024-01-01-preview", "2024-11-01-preview", "2025-03-01-preview", "2025-04-01", "2025-05-01-preview",
	"2025-06-01-preview", "2025-09-01-preview", "2025-11-01", "2025-12-01-preview", "2026-01-01-preview",
	"2026-03-01-preview",
}

var apiVersionShape = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}(-[a-zA-Z]+)?$`)

// apiVersion is a supported api-version.
type apiVersion struct {
	value string
	// extended: the version has syncMode, syncReferrers, artifactSyncFilters
	// and the cache rule identity.
	extended bool
}

// parseAPIVersion checks the api-version query value as ARM does: absent
// is MissingApiVersionParameter, malformed InvalidApiVersionParameter,
// well-formed but unknown NoRegisteredProviderFound.
func parseAPIVersion(v string, present bool, location string) (apiVersion, error) {
	if !present || v == "" {
		return apiVersion{}, errBadRequest("MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required for all requests.")
	}
	if !apiVersionShape.MatchString(v) {
		return apiVersion{}, errBadRequest("InvalidApiVersionParameter",
			fmt.Sprintf("The api-version '%s' is invalid. The supported versions are '%s'.", v, strings.Join(apiVersions, ",")))
	}
	for _, s := range apiVersions {
		if strings.EqualFold(s, v) {
			return apiVersion{value: s, extended: strings.HasSuffix(s, "-preview")}, nil
		}
	}
	return apiVersion{}, errBadRequest("NoRegisteredProviderFound",
		fmt.Sprintf("No registered resource provider found for location '%s' and API version '%s' for type 'registries'. The supported api-versions are '%s'.", location, v, strings.Join(apiVersions, ", ")))
}
