package metadata

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/rules"
)

func TestRulesCRUDAndGeneration(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
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
	err := s.UpdateRules(ctx, "Default", func(tx *RulesTx) error {
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
	_ = s.UpdateRules(ctx, "default", func(tx *RulesTx) error {
		_, err := tx.DeleteCacheRule("nosuchrule")
		return err
	})
	if g, _ := s.RulesGeneration(ctx, "default"); g != 1 {
		t.Fatalf("generation after no-op = %d, want 1", g)
	}
	// A failed transaction rolls back the change and the generation.
	boom := errors.New("boom")
	err = s.UpdateRules(ctx, "default", func(tx *RulesTx) error {
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
	err = s.UpdateRules(ctx, "default", func(tx *RulesTx) error {
		r2 := r
		r2.Name = "Other"
		return tx.PutCacheRule(r2)
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("duplicate target: %v, want ErrConflict", err)
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

func TestRulesPagingAndRepositories(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	err := s.UpdateRules(ctx, "default", func(tx *RulesTx) error {
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
	_ = s.UpdateRules(ctx, "default", func(tx *RulesTx) error {
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

func TestOperations(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	start := time.Now().UTC().Truncate(time.Microsecond)
	op := Operation{ID: "cacherules-1", Registry: "default", Resource: "/x", Status: "Succeeded", StartedAt: start, EndedAt: start}
	if err := s.PutOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	old := Operation{ID: "old", Registry: "default", Resource: "/y", Status: "Succeeded", StartedAt: start.Add(-48 * time.Hour)}
	if err := s.PutOperation(ctx, old); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetOperation(ctx, "cacherules-1")
	if err != nil || got != op {
		t.Fatalf("GetOperation = %+v, %v; want %+v", got, err, op)
	}
	// Inserting another operation expires the old one.
	if err := s.PutOperation(ctx, Operation{ID: "next", Registry: "default", Status: "Succeeded", StartedAt: start}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOperation(ctx, "old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("expired operation: %v", err)
	}
}

func TestSyncRegistries(t *testing.T) {
	ctx := context.Background()
	s := openTest(t)
	for range 2 {
		if err := s.SyncRegistries(ctx, []RegistryRecord{{Name: "Default"}, {Name: "team", Hosts: []string{"team.example.com"}}}); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	if err := s.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM registries`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("registries = %d, %v", n, err)
	}
}
