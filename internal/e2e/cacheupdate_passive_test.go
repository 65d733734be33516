package e2e

import (
	"encoding/json"
	"testing"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// `arca cache update --sync passivesync` turns an ActiveSync rule with
// filters and referrer sync back into a pull-through rule. The real
// server refuses filters on a passive rule, so the CLI drops them; it used
// to keep them and the update failed with InvalidArtifactSyncConfiguration.
func TestCacheUpdateBackToPassiveSync(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	im := newImage(t, 611, "amd64", 8<<10)
	seedImage(t, up, "library/app", "v1", im)
	a := startCachingArca(t, []string{up.Host}, nil)
	a.cacheRule(t, "app-rule", up.Host+"/library/app", "app", "--sync", "activesync", "--tag-starts-with", "v",
		"--platforms", "linux/amd64", "--sync-referrers", "enabled")
	out := a.cli(t, "cache", "update", "-r", "default", "-n", "app-rule", "--sync", "passivesync")
	var rule struct {
		SyncMode            string          `json:"syncMode"`
		SyncReferrers       string          `json:"syncReferrers"`
		ArtifactSyncFilters json.RawMessage `json:"artifactSyncFilters"`
	}
	if err := json.Unmarshal([]byte(a.cli(t, "cache", "show", "-r", "default", "-n", "app-rule")), &rule); err != nil {
		t.Fatal(err)
	}
	if rule.SyncMode != "PassiveSync" || rule.SyncReferrers == "Enabled" || len(rule.ArtifactSyncFilters) != 0 {
		t.Fatalf("after update --sync passivesync: %+v (%s)\nupdate printed %s", rule, rule.ArtifactSyncFilters, out)
	}
	getCached(t, a.URL()+"/v2/app/manifests/v1", im.Digest())
}
