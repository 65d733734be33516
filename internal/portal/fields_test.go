package portal

import "testing"

func TestFieldOf(t *testing.T) {
	for _, tc := range []struct {
		code, msg, want string
	}{
		{"InvalidRepositoryName", `sourceRepository "x" must be <login server>/<path>`, "source"},
		{"InvalidRepositoryName", `targetRepository "A" is not a valid repository path`, "target"},
		{"InvalidWildcardCacheRule", `sourceRepository "a/b" and targetRepository "c/*": either both end in a wildcard`, "source"},
		{"InvalidArtifactSyncConfiguration", `artifactSyncFilters.tags.query "x": bad`, "tags"},
		{"InvalidArtifactSyncConfiguration", `syncReferrers 'Enabled' requires syncMode 'ActiveSync'`, "referrers"},
		{"InvalidArtifactSyncConfiguration", `artifactSyncFilters (tags, platforms) require syncMode 'ActiveSync'`, "syncMode"},
		{"InvalidSecretIdentifier", `authCredentials[0].usernameSecretIdentifier is required`, "username"},
		{"InvalidSecretIdentifier", `authCredentials[0].passwordSecretIdentifier: bad`, "password"},
		{"InvalidResourceName", "Resource name must be 5 to 50 characters", "name"},
		{"WildcardCacheRuleConflict", "The target repository lib/sub/* overlaps", "target"},
		{"EnforceDockerAuthentication", "Cannot create cache rule pointing to Docker Hub without credentials.", "credentialSet"},
		{"CredentialSetLoginServerMismatch", "The credential set's login server differs", "credentialSet"},
		{"InvalidLoginServer", "bad login server", "loginServer"},
		{"QuotaExceeded", "The registry has the maximum number of cache rules.", ""},
	} {
		if got := fieldOf(&armError{Status: 400, Code: tc.code, Message: tc.msg}); got != tc.want {
			t.Errorf("fieldOf(%s, %q) = %q, want %q", tc.code, tc.msg, got, tc.want)
		}
	}
}
