package metadatatest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

func testManifestsTagsReferrers(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	layer := digest.FromString("layer")
	if err := s.LinkBlob(ctx, "r", "repo", layer, 5); err != nil {
		t.Fatal(err)
	}
	if size, err := s.BlobSize(ctx, "r", "repo", layer); err != nil || size != 5 {
		t.Fatalf("blob size %d %v", size, err)
	}
	if _, err := s.BlobSize(ctx, "other", "repo", layer); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("registries must not share links: %v", err)
	}
	m := metadata.Manifest{Registry: "r", Repo: "repo", Digest: digest.FromString("m"), MediaType: "mt", Size: 10,
		Refs: []metadata.Ref{{Digest: layer, Kind: metadata.RefBlob}}}
	if err := s.PutManifest(ctx, m, "v1", "latest"); err != nil {
		t.Fatal(err)
	}
	missing, err := s.MissingRefs(ctx, "r", "repo", []metadata.Ref{{Digest: layer, Kind: metadata.RefBlob}, {Digest: digest.FromString("x"), Kind: metadata.RefBlob}, {Digest: m.Digest, Kind: metadata.RefManifest}})
	if err != nil || len(missing) != 1 || missing[0].Digest != digest.FromString("x") {
		t.Fatalf("missing %v %v", missing, err)
	}
	sig := metadata.Manifest{Registry: "r", Repo: "repo", Digest: digest.FromString("sig"), MediaType: "mt", Size: 3,
		ArtifactType: "application/vnd.cncf.notary.signature", Subject: m.Digest, Annotations: map[string]string{"a": "b"}}
	if err := s.PutManifest(ctx, sig); err != nil {
		t.Fatal(err)
	}
	refs, err := s.Referrers(ctx, "r", "repo", m.Digest, "")
	if err != nil || len(refs) != 1 || refs[0].Annotations["a"] != "b" {
		t.Fatalf("referrers %+v %v", refs, err)
	}
	if refs, _ := s.Referrers(ctx, "r", "repo", m.Digest, "other/type"); len(refs) != 0 {
		t.Fatalf("filter: %+v", refs)
	}
	tags, more, err := s.ListTags(ctx, "r", "repo", "", 1)
	if err != nil || !more || len(tags) != 1 || tags[0] != "latest" {
		t.Fatalf("tags %v %v %v", tags, more, err)
	}
	if err := s.DeleteManifest(ctx, "r", "repo", m.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetTag(ctx, "r", "repo", "v1"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("tag survived manifest delete: %v", err)
	}
	if err := s.DeleteManifest(ctx, "r", "repo", m.Digest); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("double delete: %v", err)
	}
}

func testTagMovesAndTouch(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	a := metadata.Manifest{Registry: "r", Repo: "x", Digest: digest.FromString("a"), MediaType: "mt", Size: 1}
	b := metadata.Manifest{Registry: "r", Repo: "x", Digest: digest.FromString("b"), MediaType: "mt", Size: 1}
	s.PutManifest(ctx, a, "t")
	s.PutManifest(ctx, b, "t")
	tg, err := s.GetTag(ctx, "r", "x", "t")
	if err != nil || tg.Digest != b.Digest {
		t.Fatalf("tag %v %v", tg, err)
	}
	if err := s.TouchTag(ctx, "r", "x", "t"); err != nil {
		t.Fatal(err)
	}
}

// Concurrent writers queue on the single write connection instead of
// failing with SQLITE_BUSY.
func testConcurrentWrites(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			m := metadata.Manifest{Registry: "r", Repo: fmt.Sprintf("repo%d", i%4), Digest: digest.FromString(fmt.Sprint(i)), MediaType: "mt", Size: 1}
			if err := s.PutManifest(ctx, m, fmt.Sprintf("t%d", i)); err != nil {
				errs <- err
			}
			if _, _, err := s.ListTags(ctx, "r", m.Repo, "", 0); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	repos, _, _ := s.ListRepositories(ctx, "r", "", 0)
	if len(repos) != 4 {
		t.Fatalf("repos %v", repos)
	}
}

func testRateLimits(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	src := metadata.RateLimitSource("default/hub", "docker.io")
	if _, err := s.GetRateLimit(ctx, src); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("empty: %v", err)
	}
	now := time.Now().Truncate(time.Millisecond)
	s.RecordRateLimit(ctx, src, metadata.RateLimit{Limit: 100, Remaining: 80, Window: 6 * time.Hour, ObservedAt: now})
	// An older observation (another replica, late) does not win.
	s.RecordRateLimit(ctx, src, metadata.RateLimit{Limit: 100, Remaining: 99, Window: 6 * time.Hour, ObservedAt: now.Add(-time.Minute)})
	rl, err := s.GetRateLimit(ctx, src)
	if err != nil || rl.Remaining != 80 || rl.Window != 6*time.Hour || !rl.ObservedAt.Equal(now) {
		t.Fatalf("got %+v %v", rl, err)
	}
}

func testRulesCRUDAndGeneration(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if g, err := s.RulesGeneration(ctx, "default"); err != nil || g != 0 {
		t.Fatalf("initial generation = %d, %v", g, err)
	}
	created := time.Date(2026, 3, 24, 1, 18, 39, 190263000, time.UTC)
	r := rules.Rule{Name: "MyRule", Source: "docker.io/library/*", Target: "dockerhub/*", CredentialSet: "hub",
		SyncMode: rules.ActiveSync, SyncReferrers: "Enabled", ProvisioningState: rules.StateSucceeded,
		Filters: rules.Filters{Tags: "Tags | where Name startswith 'v'", Platforms: []string{"linux/amd64"},
			ArtifactTypes: &rules.KindFilter{Type: "exclude", Values: []string{"application/vnd.cncf.notary.signature"}}},
		CreatedAt: created, ModifiedAt: created}
	cs := rules.CredentialSet{Name: "hub", LoginServer: "docker.io", UsernameRef: "env://U", PasswordRef: "env://P",
		Health: rules.Health{Status: rules.Unhealthy, ErrorCode: "X", ErrorMessage: "y"}, PrincipalID: "p-1",
		ProvisioningState: rules.StateSucceeded, CreatedAt: created, ModifiedAt: created}
	err := s.UpdateRules(ctx, "Default", func(tx metadata.RulesTx) error {
		if err := tx.PutCredentialSet(cs); err != nil {
			return err
		}
		return tx.PutCacheRule(r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := s.RulesGeneration(ctx, "default"); g != 1 {
		t.Fatalf("generation after one change = %d, want 1", g)
	}
	got, err := s.GetCacheRule(ctx, "default", "myrule")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "MyRule" || got.Target != "dockerhub/*" || got.Filters.Tags != r.Filters.Tags ||
		got.Filters.ArtifactTypes == nil || got.Filters.ArtifactTypes.Values[0] != "application/vnd.cncf.notary.signature" ||
		!got.CreatedAt.Equal(created) || got.SyncMode != rules.ActiveSync {
		t.Fatalf("round trip: %+v", got)
	}
	gotCS, err := s.GetCredentialSet(ctx, "default", "HUB")
	if err != nil || gotCS != cs {
		t.Fatalf("credential set round trip: %+v, %v", gotCS, err)
	}

	// A read-only transaction does not move the generation; a no-op delete neither.
	_ = s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error {
		_, err := tx.DeleteCacheRule("nosuchrule")
		return err
	})
	if g, _ := s.RulesGeneration(ctx, "default"); g != 1 {
		t.Fatalf("generation after no-op = %d, want 1", g)
	}
	// A failed transaction rolls back the change and the generation.
	boom := errors.New("boom")
	err = s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error {
		if _, err := tx.DeleteCacheRule("MyRule"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if g, _ := s.RulesGeneration(ctx, "default"); g != 1 {
		t.Fatalf("generation after rollback = %d", g)
	}
	if _, err := s.GetCacheRule(ctx, "default", "MyRule"); err != nil {
		t.Fatalf("rule lost in rollback: %v", err)
	}
	// Same target under another name is refused by the store itself.
	err = s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error {
		r2 := r
		r2.Name = "Other"
		return tx.PutCacheRule(r2)
	})
	if !errors.Is(err, metadata.ErrConflict) {
		t.Fatalf("duplicate target: %v, want metadata.ErrConflict", err)
	}
	// Other registries are separate.
	if list, err := s.ListCacheRules(ctx, "other"); err != nil || len(list) != 0 {
		t.Fatalf("other registry: %v %v", list, err)
	}
	if err := s.SetCacheRuleSyncStatus(ctx, "default", "myrule", rules.SyncStatus{Status: "Running", SyncedTags: 3}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetCacheRule(ctx, "default", "MyRule"); got.SyncStatus == nil || got.SyncStatus.SyncedTags != 3 {
		t.Fatalf("sync status: %+v", got.SyncStatus)
	}
}

func testRulesPagingAndRepositories(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	err := s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error {
		for _, n := range []string{"rule-c", "Rule-B", "rule-a"} {
			if err := tx.PutCacheRule(rules.Rule{Name: n, Source: "quay.io/" + n, Target: n, ProvisioningState: rules.StateSucceeded}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	page, more, err := s.ListCacheRulesPage(ctx, "default", "", 2)
	if err != nil || !more || len(page) != 2 || page[0].Name != "rule-a" || page[1].Name != "Rule-B" {
		t.Fatalf("page 1: %v %v %v", page, more, err)
	}
	page, more, err = s.ListCacheRulesPage(ctx, "default", "rule-b", 2)
	if err != nil || more || len(page) != 1 || page[0].Name != "rule-c" {
		t.Fatalf("page 2: %v %v %v", page, more, err)
	}

	if err := s.LinkBlob(ctx, "default", "team_a/app", digest.FromString("x"), 1); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPushed(ctx, "default", "team_a/app"); err != nil {
		t.Fatal(err)
	}
	// Cached (not pushed) content does not count.
	if err := s.LinkBlob(ctx, "default", "team_b/app", digest.FromString("y"), 1); err != nil {
		t.Fatal(err)
	}
	_ = s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error {
		for _, tc := range []struct {
			prefix string
			want   bool
		}{{"", true}, {"team_a/", true}, {"team/", false}, {"teamxa/", false}, {"team_a/app/", false}} {
			name, ok, err := tx.RepositoryUnder(tc.prefix)
			if err != nil || ok != tc.want {
				t.Errorf("RepositoryUnder(%q) = %q, %v, %v", tc.prefix, name, ok, err)
			}
		}
		if ok, _ := tx.RepositoryExists("team_a/app"); !ok {
			t.Error("RepositoryExists(team_a/app) = false")
		}
		if ok, _ := tx.RepositoryExists("team_a"); ok {
			t.Error("RepositoryExists(team_a) = true")
		}
		if ok, _ := tx.RepositoryExists("team_b/app"); ok {
			t.Error("RepositoryExists(team_b/app) = true for cached-only content")
		}
		return nil
	})
}

func testOperations(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	start := time.Now().UTC().Truncate(time.Microsecond)
	op := metadata.Operation{ID: "cacherules-1", Registry: "default", Resource: "/x", Status: "Succeeded", StartedAt: start, EndedAt: start}
	if err := s.PutOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	old := metadata.Operation{ID: "old", Registry: "default", Resource: "/y", Status: "Succeeded", StartedAt: start.Add(-48 * time.Hour)}
	if err := s.PutOperation(ctx, old); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetOperation(ctx, "cacherules-1")
	if err != nil || got != op {
		t.Fatalf("GetOperation = %+v, %v; want %+v", got, err, op)
	}
	// A running operation is written again and again (its heartbeat and
	// progress), then finished with its result.
	run := metadata.Operation{ID: "garbagecollect-1", Registry: "default", Resource: "/r", Status: "InProgress", StartedAt: start,
		UpdatedAt: start, Properties: `{"phase":"uploads"}`}
	if err := s.PutOperation(ctx, run); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetOperation(ctx, run.ID); err != nil || got != run {
		t.Fatalf("GetOperation = %+v, %v; want %+v", got, err, run)
	}
	run.UpdatedAt, run.Properties = start.Add(time.Second), `{"phase":"blobs","blobs":3}`
	if err := s.PutOperation(ctx, run); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetOperation(ctx, run.ID); err != nil || got != run {
		t.Fatalf("after progress: GetOperation = %+v, %v; want %+v", got, err, run)
	}
	run.Status, run.EndedAt, run.UpdatedAt, run.Properties = "Succeeded", start.Add(2*time.Second), start.Add(2*time.Second), `{"phase":"done","blobs":4}`
	if err := s.PutOperation(ctx, run); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetOperation(ctx, run.ID); err != nil || got != run {
		t.Fatalf("finished: GetOperation = %+v, %v; want %+v", got, err, run)
	}
	// Inserting another operation expires the old one.
	if err := s.PutOperation(ctx, metadata.Operation{ID: "next", Registry: "default", Status: "Succeeded", StartedAt: start}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOperation(ctx, "old"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("expired operation: %v", err)
	}
	testLatestOperation(t, s, start)
}

// testLatestOperation: the operation of a kind (its ID prefix) on a
// registry that started last.
func testLatestOperation(t *testing.T, s metadata.Store, start time.Time) {
	ctx := context.Background()
	for _, op := range []metadata.Operation{
		{ID: "garbagecollect-2", Registry: "default", Status: "Failed", StartedAt: start.Add(time.Minute)},
		{ID: "garbagecollect-3", Registry: "team", Status: "Succeeded", StartedAt: start.Add(2 * time.Minute)}, // another registry
		{ID: "cacherules-2", Registry: "default", Status: "Succeeded", StartedAt: start.Add(3 * time.Minute)},  // another kind
		{ID: "garbagecollectx-1", Registry: "default", Status: "Succeeded", StartedAt: start.Add(4 * time.Minute)},
	} {
		if err := s.PutOperation(ctx, op); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ registry, kind, want string }{
		{"default", "garbagecollect", "garbagecollect-2"},
		{"Default", "garbagecollect", "garbagecollect-2"}, // registry names are case-insensitive
		{"team", "garbagecollect", "garbagecollect-3"},
		{"default", "cacherules", "cacherules-2"},
		{"other", "garbagecollect", ""},
		{"default", "credentialsets", ""},
	} {
		got, err := s.LatestOperation(ctx, tc.registry, tc.kind)
		if tc.want == "" {
			if !errors.Is(err, metadata.ErrNotFound) {
				t.Errorf("LatestOperation(%s, %s) = %+v, %v; want ErrNotFound", tc.registry, tc.kind, got, err)
			}
			continue
		}
		if err != nil || got.ID != tc.want {
			t.Errorf("LatestOperation(%s, %s) = %+v, %v; want %s", tc.registry, tc.kind, got, err, tc.want)
		}
	}
	if got, err := s.LatestOperation(ctx, "default", "garbagecollect"); err != nil || got.Status != "Failed" || !got.StartedAt.Equal(start.Add(time.Minute)) {
		t.Errorf("LatestOperation fields: %+v, %v", got, err)
	}
}

func testSyncRegistries(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	for range 2 {
		if err := s.SyncRegistries(ctx, []metadata.RegistryRecord{{Name: "Default"}, {Name: "team", Hosts: []string{"team.example.com"}}}); err != nil {
			t.Fatal(err)
		}
	}
}

func testSyncLease(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	steps := []struct {
		what   string
		holder string
		ttl    time.Duration
		want   bool
	}{
		{"first taker", "a", time.Minute, true},
		{"other holder while held", "b", time.Minute, false},
		{"renewal by the holder", "a", 50 * time.Millisecond, true},
		{"still held before expiry", "b", time.Minute, false},
	}
	for _, st := range steps {
		got, err := s.AcquireSyncLease(ctx, "Default", "Rule-One", st.holder, st.ttl)
		if err != nil || got != st.want {
			t.Fatalf("%s: got %v, %v; want %v", st.what, got, err, st.want)
		}
	}
	time.Sleep(80 * time.Millisecond)
	if got, _ := s.AcquireSyncLease(ctx, "default", "rule-one", "b", time.Minute); !got {
		t.Fatal("an expired lease was not taken over (registry and rule names ignore case)")
	}
	if err := s.ReleaseSyncLease(ctx, "default", "rule-one", "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.AcquireSyncLease(ctx, "default", "rule-one", "a", time.Minute); got {
		t.Fatal("a release by a former holder freed b's lease")
	}
	if err := s.ReleaseSyncLease(ctx, "default", "rule-one", "b"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.AcquireSyncLease(ctx, "default", "rule-one", "a", time.Minute); !got {
		t.Fatal("a released lease was not free")
	}
	if got, _ := s.AcquireSyncLease(ctx, "default", "rule-two", "b", time.Minute); !got {
		t.Fatal("leases are per rule")
	}
}

func testSyncLeaseHasOneWinner(t *testing.T, open Opener) {
	s := open(t)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.AcquireSyncLease(context.Background(), "default", "contended", string(rune('a'+i)), time.Minute)
			if err != nil {
				t.Error(err)
			}
			if got {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d holders of one lease", wins.Load())
	}
}

func testSyncRunsAndTags(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.GetSyncRun(ctx, "default", "r1"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("missing run: %v", err)
	}
	start := time.Date(2026, 11, 22, 8, 0, 0, 0, time.UTC)
	run := metadata.SyncRun{Registry: "default", Rule: "R1", RunID: "x", Result: "Running", StartedAt: start, ConfigHash: "h"}
	if err := s.PutSyncRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	run.Result, run.EndedAt, run.TagsSynced, run.BytesFetched, run.Error = "Failed", start.Add(time.Minute), 3, 1<<40, "boom"
	if err := s.PutSyncRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSyncRun(ctx, "DEFAULT", "r1")
	if err != nil || got.Result != "Failed" || !got.StartedAt.Equal(start) || !got.EndedAt.Equal(start.Add(time.Minute)) ||
		got.TagsSynced != 3 || got.BytesFetched != 1<<40 || got.Error != "boom" || !got.NextAt.IsZero() {
		t.Fatalf("run: %+v %v", got, err)
	}

	for _, st := range []metadata.SyncTag{
		{Registry: "default", Rule: "r1", Repo: "app", Tag: "v1", Digest: "sha256:1", State: "done", ConfigHash: "h"},
		{Registry: "default", Rule: "r1", Repo: "app", Tag: "v2", Digest: "sha256:2", State: "failed", Error: "upstream 500", ConfigHash: "h"},
		{Registry: "default", Rule: "r2", Repo: "app", Tag: "v3", State: "failed", Error: "other rule"},
	} {
		if err := s.PutSyncTag(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.GetSyncTag(ctx, "default", "R1", "app", "v1")
	if err != nil || st.State != "done" || st.Digest != "sha256:1" || st.ConfigHash != "h" {
		t.Fatalf("tag: %+v %v", st, err)
	}
	errs, err := s.SyncTagErrors(ctx, "default", "r1", 10)
	if err != nil || len(errs) != 1 || errs[0].Tag != "v2" || errs[0].Error != "upstream 500" {
		t.Fatalf("tag errors: %+v %v", errs, err)
	}
	// A later success clears the error.
	if err := s.PutSyncTag(ctx, metadata.SyncTag{Registry: "default", Rule: "r1", Repo: "app", Tag: "v2", Digest: "sha256:2", State: "done"}); err != nil {
		t.Fatal(err)
	}
	if errs, _ := s.SyncTagErrors(ctx, "default", "r1", 10); len(errs) != 0 {
		t.Fatalf("tag errors after success: %+v", errs)
	}
}

func testActiveSyncRules(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	for _, reg := range []string{"one", "two"} {
		err := s.UpdateRules(ctx, reg, func(tx metadata.RulesTx) error {
			for _, r := range []rules.Rule{
				{Name: "active-rule", Source: "quay.io/a", Target: "a", SyncMode: rules.ActiveSync},
				{Name: "passive-rule", Source: "quay.io/b", Target: "b", SyncMode: rules.PassiveSync},
				{Name: "default-rule", Source: "quay.io/c", Target: "c"},
			} {
				r.ProvisioningState = rules.StateSucceeded
				if err := tx.PutCacheRule(r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	refs, err := s.ActiveSyncRules(ctx)
	if err != nil || len(refs) != 2 || refs[0] != (metadata.RuleRef{Registry: "one", Name: "active-rule"}) || refs[1] != (metadata.RuleRef{Registry: "two", Name: "active-rule"}) {
		t.Fatalf("active rules: %+v %v", refs, err)
	}
}
