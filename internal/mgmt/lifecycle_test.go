package mgmt

import (
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/arcacache/arca/internal/lifecycle"
	"github.com/arcacache/arca/internal/metadata"
)

// storeLifecycle is the server's adapter over the fixture's real store.
type storeLifecycle struct {
	meta metadata.Store
	ev   *lifecycle.Evictor
}

func (l storeLifecycle) Usages(ctx context.Context, registry string) ([]lifecycle.Usage, error) {
	return lifecycle.Usages(ctx, l.meta, registry)
}

func (l storeLifecycle) Purge(ctx context.Context, registry, rule string, olderThan time.Duration, dryRun bool) (lifecycle.Result, error) {
	return l.ev.Purge(ctx, registry, rule, olderThan, dryRun)
}

func withLifecycle(t *testing.T, meta *metadata.Store) fixtureOpt {
	return func(o *Options) {
		m := o.Store.(metadata.Store)
		*meta = m
		ev, err := lifecycle.NewEvictor(m, prometheus.NewRegistry(), nil, "test", nil)
		if err != nil {
			t.Fatal(err)
		}
		o.Lifecycle = storeLifecycle{meta: m, ev: ev}
	}
}

// Usages and purges: who may call them, what they validate, and the
// quota and retention properties they rest on.
func TestUsagesPurgeAndQuotas(t *testing.T) {
	var meta metadata.Store
	f := newFixture(t, withLifecycle(t, &meta))
	reader := "Bearer " + f.newPrincipalToken("reader", RoleReader, "")
	contrib := "Bearer " + f.newPrincipalToken("contrib", RoleContributor, "")
	rule := ruleBody("mcr.microsoft.com/dotnet/*", "dotnet/*", "")
	rule["properties"].(map[string]any)["retentionDays"] = 30
	if r := f.do("PUT", base("default")+"/cacheRules/dotnet", rule); r.status != 201 {
		t.Fatalf("create rule: %d %s", r.status, r.body)
	}
	ctx := context.Background()
	m := metadata.Manifest{Registry: "default", Repo: "dotnet/sdk", Digest: digest.FromString("sdk"), MediaType: "mt", Size: 100}
	if err := meta.PutManifest(ctx, m, "8.0"); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, who, method, path string
		body                    any
		want                    int
	}{
		{"reader lists usages", reader, "GET", base("default") + "/listUsages", nil, 200},
		{"reader may not purge", reader, "POST", base("default") + "/cacheRules/dotnet/purge", map[string]any{}, 403},
		{"reader may not set quotas", reader, "PATCH", base("default"), map[string]any{"properties": map[string]any{"cacheQuotaBytes": 1}}, 403},
		{"listUsages is GET only", contrib, "POST", base("default") + "/listUsages", nil, 405},
		{"purge is POST only", contrib, "GET", base("default") + "/cacheRules/dotnet/purge", nil, 405},
		{"purge of a missing rule", contrib, "POST", base("default") + "/cacheRules/nosuchrule/purge", map[string]any{}, 404},
		{"negative age", contrib, "POST", base("default") + "/cacheRules/dotnet/purge", map[string]any{"olderThanSeconds": -1}, 400},
		{"negative quota", contrib, "PATCH", base("default"), map[string]any{"properties": map[string]any{"storageQuotaBytes": -5}}, 400},
		{"retention out of range", contrib, "PATCH", base("default") + "/cacheRules/dotnet", map[string]any{"properties": map[string]any{"retentionDays": 4000}}, 400},
		{"negative retention", contrib, "PATCH", base("default") + "/cacheRules/dotnet", map[string]any{"properties": map[string]any{"retentionDays": -1}}, 400},
		{"quotas set", contrib, "PATCH", base("default"), map[string]any{"properties": map[string]any{"cacheQuotaBytes": 20 << 30, "storageQuotaBytes": 50 << 30}}, 200},
		{"dry purge", contrib, "POST", base("default") + "/cacheRules/dotnet/purge", map[string]any{"dryRun": true}, 200},
	}
	for _, c := range cases {
		if r := f.doAuth(c.method, c.path, c.body, c.who); r.status != c.want {
			t.Errorf("%s: %s %s: %d, want %d (%s)", c.name, c.method, c.path, r.status, c.want, r.body)
		}
	}
	reg := f.do("GET", base("default"), nil).json(t)["properties"].(map[string]any)
	if reg["cacheQuotaBytes"] != float64(20<<30) || reg["storageQuotaBytes"] != float64(50<<30) {
		t.Errorf("registry quotas %v, %v", reg["cacheQuotaBytes"], reg["storageQuotaBytes"])
	}
	if got := f.do("GET", base("default")+"/cacheRules/dotnet", nil).json(t)["properties"].(map[string]any)["retentionDays"]; got != float64(30) {
		t.Errorf("retentionDays %v, want 30", got)
	}
	us := f.do("GET", base("default")+"/listUsages", nil).json(t)["value"].([]any)
	want := map[string][2]float64{"Size": {100, 70 << 30}, "PushedSize": {0, 50 << 30}, "CachedSize": {100, 20 << 30}, "CachedSize/dotnet": {100, 0}}
	if len(us) != len(want) {
		t.Fatalf("usages %v", us)
	}
	for _, u := range us {
		u := u.(map[string]any)
		if w := want[u["name"].(string)]; u["currentValue"] != w[0] || u["limit"] != w[1] || u["unit"] != "Bytes" {
			t.Errorf("usage %v, want current %v limit %v", u, w[0], w[1])
		}
	}
	// The dry run changed nothing; the purge takes the manifest.
	if _, err := meta.GetManifest(ctx, "default", "dotnet/sdk", m.Digest); err != nil {
		t.Fatalf("after a dry run: %v", err)
	}
	r := f.doAuth("POST", base("default")+"/cacheRules/dotnet/purge", nil, contrib)
	if body := r.json(t); r.status != 200 || body["manifests"] != float64(1) || body["bytes"] != float64(100) || body["dryRun"] != false {
		t.Fatalf("purge: %d %s", r.status, r.body)
	}
	if _, err := meta.GetManifest(ctx, "default", "dotnet/sdk", m.Digest); err == nil {
		t.Fatal("purged manifest still there")
	}
}
