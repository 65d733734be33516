// Package metadatatest is the conformance suite of metadata.Store: every
// implementation runs it (SQLite and PostgreSQL, in their packages' tests),
// so consumers can rely on the contract rather than on one engine.
package metadatatest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// Opener returns a new, empty store, closed at t's cleanup.
type Opener func(t *testing.T) metadata.Store

// Run runs every conformance case against stores from open.
func Run(t *testing.T, open Opener) {
	for _, c := range []struct {
		name string
		fn   func(*testing.T, Opener)
	}{
		{"ManifestsTagsReferrers", testManifestsTagsReferrers},
		{"TagMovesAndTouch", testTagMovesAndTouch},
		{"ConcurrentWrites", testConcurrentWrites},
		{"RateLimits", testRateLimits},
		{"RulesCRUDAndGeneration", testRulesCRUDAndGeneration},
		{"RulesPagingAndRepositories", testRulesPagingAndRepositories},
		{"Operations", testOperations},
		{"SyncRegistries", testSyncRegistries},
		{"SyncLease", testSyncLease},
		{"SyncLeaseHasOneWinner", testSyncLeaseHasOneWinner},
		{"SyncRunsAndTags", testSyncRunsAndTags},
		{"ActiveSyncRules", testActiveSyncRules},
		{"Pagination", testPagination},
		{"MissingRefsBatch", testMissingRefsBatch},
		{"ConcurrentTagWriters", testConcurrentTagWriters},
		{"TwoRuleWritersOneWins", testTwoRuleWritersOneWins},
		{"RulesTxSerialised", testRulesTxSerialised},
		{"UploadsConflict", testUploadsConflict},
		{"NamesIgnoreCase", testNamesIgnoreCase},
		{"BlobLinksAndUsage", testBlobLinksAndUsage},
		{"CredentialHealth", testCredentialHealth},
		{"Registries", testRegistries},
		{"ScopeMapsAndTokens", testScopeMapsAndTokens},
		{"SigningKeysAndRefreshTokens", testSigningKeysAndRefreshTokens},
		{"PrincipalsAndAudit", testPrincipalsAndAudit},
		{"OwnedUploads", testOwnedUploads},
		{"UploadStateOneWriterWins", testUploadState},
		{"RuleStats", testRuleStats},
		{"Identities", testIdentities},
		// Garbage collection (gc.go).
		{"GCBlobLifecycle", testGCBlobLifecycle},
		{"GCMarkClearedByReference", testGCMarkClearedByReference},
		{"GCPrepareWaitsForDeletion", testGCPrepareWaitsForDeletion},
		{"GCOrphans", testGCOrphans},
		{"GCUntaggedManifests", testGCUntaggedManifests},
		{"RetentionPolicies", testRetentionPolicies},
		// Storage lifecycle (lifecycle.go).
		{"RecordPulls", testRecordPulls},
		{"RecordPullsConcurrent", testRecordPullsConcurrent},
		{"EvictCached", testEvictCached},
		{"QuotasAndRetention", testQuotasAndRetention},
		{"SyncKeptManifests", testSyncKeptManifests},
		{"PushedBytes", testPushedBytes},
		{"FetchLeases", testFetchLeases},
		{"SettleFetchLease", testSettleFetchLease},
		// Repository details and deletion (repoinfo.go).
		{"RepositoryInfo", testRepositoryInfo},
		{"CredentialSetIdentity", testCredentialSetIdentity},
		{"RoleAssignmentCondition", testRoleAssignmentCondition},
		{"IdentitySecret", testIdentitySecret},
		// Web portal sessions (portalsessions.go).
		{"PortalSessions", testPortalSessions},
		{"ManifestAttrs", testManifestAttrs},
		// Cluster: shared 429 hold-backs (upstreamholds.go).
		{"UpstreamHolds", testUpstreamHolds},
		// Cluster: shared failed-login counts (loginfailures.go).
		{"LoginFailures", testLoginFailures},
	} {
		t.Run(c.name, func(t *testing.T) { c.fn(t, open) })
	}
}

// Pages of tags and repositories come in byte order, n at a time, with
// "more" exactly when rows follow; n <= 0 returns all.
func testPagination(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	// Upper case sorts before lower case in byte order; a locale collation
	// would interleave them.
	want := []string{"A", "B", "a", "a-1", "a.1", "a_1", "b", "z"}
	for i, tag := range []string{"z", "a_1", "B", "a", "a.1", "b", "A", "a-1"} {
		m := metadata.Manifest{Registry: "r", Repo: "app", Digest: digest.FromString(fmt.Sprint(i)), MediaType: "mt", Size: 1}
		if err := s.PutManifest(ctx, m, tag); err != nil {
			t.Fatal(err)
		}
		if err := s.LinkBlob(ctx, "r", "repo-"+tag, digest.FromString("l"), 1); err != nil {
			t.Fatal(err)
		}
	}
	all, more, err := s.ListTags(ctx, "r", "app", "", 0)
	if err != nil || more || fmt.Sprint(all) != fmt.Sprint(want) {
		t.Fatalf("all tags = %v, %v, %v; want %v", all, more, err, want)
	}
	var paged []string
	last := ""
	for {
		page, more, err := s.ListTags(ctx, "r", "app", last, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 3 {
			t.Fatalf("page of %d > 3", len(page))
		}
		paged = append(paged, page...)
		if !more {
			break
		}
		last = page[len(page)-1]
	}
	if fmt.Sprint(paged) != fmt.Sprint(want) {
		t.Fatalf("paged tags = %v, want %v", paged, want)
	}
	if page, more, _ := s.ListTags(ctx, "r", "app", "", len(want)); more || len(page) != len(want) {
		t.Fatalf("exact page: %v more=%v", page, more)
	}
	repos, more, err := s.ListRepositories(ctx, "r", "repo-a", 2)
	if err != nil || !more || fmt.Sprint(repos) != "[repo-a-1 repo-a.1]" {
		t.Fatalf("repositories after repo-a: %v %v %v", repos, more, err)
	}
	if repos, _, _ := s.ListRepositories(ctx, "other", "", 0); len(repos) != 0 {
		t.Fatalf("other registry: %v", repos)
	}
}

// Pushes that set the same tags, in opposite orders, at once all succeed
// and leave each tag on one of the manifests.
func testConcurrentTagWriters(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tags := []string{"a", "b", "c"}
			if w == 1 {
				tags = []string{"c", "b", "a"}
			}
			for i := range 20 {
				m := metadata.Manifest{Registry: "r", Repo: "app", Digest: digest.FromString(fmt.Sprint(w, "/", i)), MediaType: "mt", Size: 1}
				if err := s.PutManifest(ctx, m, tags...); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, tag := range []string{"a", "b", "c"} {
		if _, err := s.GetTag(ctx, "r", "app", tag); err != nil {
			t.Fatalf("tag %s: %v", tag, err)
		}
	}
}

// MissingRefs answers for many references at once, both kinds.
func testMissingRefsBatch(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	var refs, want []metadata.Ref
	for i := range 1200 {
		d := digest.FromString(fmt.Sprint("blob", i))
		refs = append(refs, metadata.Ref{Digest: d, Kind: metadata.RefBlob})
		if i%3 == 0 {
			if err := s.LinkBlob(ctx, "r", "repo", d, 1); err != nil {
				t.Fatal(err)
			}
		} else {
			want = append(want, refs[len(refs)-1])
		}
	}
	child := metadata.Manifest{Registry: "r", Repo: "repo", Digest: digest.FromString("child"), MediaType: "mt", Size: 1}
	if err := s.PutManifest(ctx, child); err != nil {
		t.Fatal(err)
	}
	// A blob link does not stand in for a manifest, nor the other way.
	refs = append(refs, metadata.Ref{Digest: child.Digest, Kind: metadata.RefManifest},
		metadata.Ref{Digest: digest.FromString("blob0"), Kind: metadata.RefManifest})
	want = append(want, refs[len(refs)-1])
	got, err := s.MissingRefs(ctx, "r", "repo", refs)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("missing: %d refs, want %d (in the order given)", len(got), len(want))
	}
	if got, err := s.MissingRefs(ctx, "r", "repo", nil); err != nil || len(got) != 0 {
		t.Fatalf("no refs: %v %v", got, err)
	}
}

// Two concurrent rules transactions putting a rule on the same target
// under different names: exactly one commits, the other gets ErrConflict
// and leaves nothing behind.
func testTwoRuleWritersOneWins(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	for round := range 5 {
		target := fmt.Sprint("t", round)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error {
					return tx.PutCacheRule(rules.Rule{Name: fmt.Sprint("w", i, "-", round), Source: "quay.io/x", Target: target,
						ProvisioningState: rules.StateSucceeded})
				})
			}()
		}
		wg.Wait()
		ok, conflicts := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, metadata.ErrConflict):
				conflicts++
			default:
				t.Fatalf("round %d: %v", round, err)
			}
		}
		if ok != 1 || conflicts != 1 {
			t.Fatalf("round %d: %d commits, %d conflicts; want 1 and 1", round, ok, conflicts)
		}
	}
	list, err := s.ListCacheRules(ctx, "default")
	if err != nil || len(list) != 5 {
		t.Fatalf("rules after 5 rounds: %d, %v", len(list), err)
	}
	if g, _ := s.RulesGeneration(ctx, "default"); g != 5 {
		t.Fatalf("generation = %d, want 5 (failed transactions do not move it)", g)
	}
}

// Rules transactions of one registry see each other's writes: a check
// made in one (here: at most one rule, as the management API checks
// limits and overlaps) holds at its commit, however many run at once.
func testRulesTxSerialised(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error {
				list, err := tx.CacheRules()
				if err != nil || len(list) > 0 {
					return err
				}
				time.Sleep(20 * time.Millisecond) // let the others read too, if they can
				return tx.PutCacheRule(rules.Rule{Name: fmt.Sprint("only-", i), Source: "quay.io/x", Target: fmt.Sprint("t", i),
					ProvisioningState: rules.StateSucceeded})
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if list, _ := s.ListCacheRules(ctx, "default"); len(list) != 1 {
		t.Fatalf("%d rules after 8 transactions that each add one only if there is none", len(list))
	}
}

func testUploadsConflict(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if err := s.CreateUpload(ctx, "r", "repo", "u1"); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateUpload(ctx, "r", "other", "u1"); !errors.Is(err, metadata.ErrConflict) {
		t.Fatalf("second upload with id u1: %v, want ErrConflict", err)
	}
	if ok, err := s.UploadExists(ctx, "r", "repo", "u1"); err != nil || !ok {
		t.Fatalf("upload exists: %v %v", ok, err)
	}
	if ok, _ := s.UploadExists(ctx, "r", "other", "u1"); ok {
		t.Fatal("upload visible from another repository")
	}
	if err := s.DeleteUpload(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.UploadExists(ctx, "r", "repo", "u1"); ok {
		t.Fatal("deleted upload exists")
	}
}

// Rule and credential-set names keep their case and are unique ignoring
// it; registry names ignore case.
func testNamesIgnoreCase(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	err := s.UpdateRules(ctx, "Default", func(tx metadata.RulesTx) error {
		if err := tx.PutCacheRule(rules.Rule{Name: "MyRule", Source: "quay.io/a", Target: "a", ProvisioningState: rules.StateSucceeded}); err != nil {
			return err
		}
		// Same name in another case replaces it (and may rename it).
		if err := tx.PutCacheRule(rules.Rule{Name: "MYRULE", Source: "quay.io/b", Target: "b", ProvisioningState: rules.StateSucceeded}); err != nil {
			return err
		}
		return tx.PutCredentialSet(rules.CredentialSet{Name: "Hub", LoginServer: "docker.io", UsernameRef: "u", PasswordRef: "p",
			PrincipalID: "x", ProvisioningState: rules.StateSucceeded})
	})
	if err != nil {
		t.Fatal(err)
	}
	list, _ := s.ListCacheRules(ctx, "DEFAULT")
	if len(list) != 1 || list[0].Name != "MYRULE" || list[0].Target != "b" {
		t.Fatalf("rules: %+v", list)
	}
	if _, err := s.GetCredentialSet(ctx, "default", "hUB"); err != nil {
		t.Fatal(err)
	}
	sets, _, _ := s.ListCredentialSetsPage(ctx, "default", "", 0)
	if len(sets) != 1 || sets[0].Name != "Hub" {
		t.Fatalf("credential sets: %+v", sets)
	}
	err = s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error {
		if _, ok, err := tx.CacheRule("myrule"); err != nil || !ok {
			return fmt.Errorf("CacheRule(myrule) = %v, %v", ok, err)
		}
		if ok, err := tx.DeleteCredentialSet("HUB"); err != nil || !ok {
			return fmt.Errorf("DeleteCredentialSet(HUB) = %v, %v", ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetCredentialSet(ctx, "default", "Hub"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("deleted set: %v", err)
	}
	if _, err := s.GetCacheRule(ctx, "default", "nosuch"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("missing rule: %v", err)
	}
	if err := s.SetCacheRuleSyncStatus(ctx, "default", "nosuch", rules.SyncStatus{}); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("sync status of a missing rule: %v", err)
	}
}

func testBlobLinksAndUsage(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	d := digest.FromString("shared")
	for _, repo := range []string{"a", "b"} {
		if err := s.LinkBlob(ctx, "r", repo, d, 100); err != nil {
			t.Fatal(err)
		}
	}
	// Linking again is a no-op.
	if err := s.LinkBlob(ctx, "r", "a", d, 100); err != nil {
		t.Fatal(err)
	}
	m := metadata.Manifest{Registry: "r", Repo: "a", Digest: digest.FromString("m"), MediaType: "mt", Size: 7,
		Refs: []metadata.Ref{{Digest: d, Kind: metadata.RefBlob}}}
	if err := s.PutManifest(ctx, m, "v1"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.References(ctx, "r", "a", d); err != nil || !ok {
		t.Fatalf("references: %v %v", ok, err)
	}
	if ok, _ := s.References(ctx, "r", "b", d); ok {
		t.Fatal("references from another repository")
	}
	usage, err := s.Usage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]metadata.RepoUsage{}
	for _, u := range usage {
		got[u.Repo] = u
	}
	if a := got["a"]; a.Blobs != 1 || a.BlobBytes != 100 || a.Manifests != 1 || a.ManifestBytes != 7 {
		t.Fatalf("usage of a: %+v", a)
	}
	if b := got["b"]; b.Blobs != 1 || b.Manifests != 0 {
		t.Fatalf("usage of b: %+v", b)
	}
	if list, more, err := s.ListManifests(ctx, "r", "a", "", 0); err != nil || more || len(list) != 1 || list[0] != m.Digest {
		t.Fatalf("manifests of a: %v %v %v", list, more, err)
	}
	if list, _, err := s.ListRepoBlobs(ctx, "r", "a", "", 0); err != nil || len(list) != 1 || list[0] != d {
		t.Fatalf("blobs of a (manifests not included): %v %v", list, err)
	}
	if list, _, _ := s.ListManifests(ctx, "r", "b", "", 0); len(list) != 0 {
		t.Fatalf("manifests of b: %v", list)
	}
	// Blobs are listed once each, in digest order, a page at a time.
	if err := s.LinkBlob(ctx, "r", "c", digest.FromString("other"), 5); err != nil {
		t.Fatal(err)
	}
	first, more, err := s.ListBlobs(ctx, "", 1)
	if err != nil || !more || len(first) != 1 {
		t.Fatalf("first blob page: %v %v %v", first, more, err)
	}
	rest, more, err := s.ListBlobs(ctx, first[0].Digest, 0)
	// Three blobs: the shared layer, the manifest, "other".
	if err != nil || more || len(rest) != 2 || rest[0].Digest <= first[0].Digest || rest[1].Digest <= rest[0].Digest {
		t.Fatalf("rest of the blobs after %s: %v %v %v", first[0].Digest, rest, more, err)
	}
	if err := s.UnlinkBlob(ctx, "r", "b", d); err != nil {
		t.Fatal(err)
	}
	if err := s.UnlinkBlob(ctx, "r", "b", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("second unlink: %v", err)
	}
	if _, err := s.BlobSize(ctx, "r", "b", d); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("unlinked blob: %v", err)
	}
	if ok, _ := s.RepositoryExists(ctx, "r", "a"); !ok {
		t.Fatal("repository a does not exist")
	}
	if ok, _ := s.RepositoryExists(ctx, "r", "nosuch"); ok {
		t.Fatal("repository nosuch exists")
	}
	if err := s.DeleteTag(ctx, "r", "a", "nosuch"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("delete of a missing tag: %v", err)
	}
}

// A health check stores only if the set was not rewritten meanwhile.
func testCredentialHealth(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	cs := rules.CredentialSet{Name: "Hub", LoginServer: "docker.io", UsernameRef: "u", PasswordRef: "p", PrincipalID: "x",
		ProvisioningState: rules.StateSucceeded}
	put := func(c rules.CredentialSet) {
		t.Helper()
		if err := s.UpdateRules(ctx, "default", func(tx metadata.RulesTx) error { return tx.PutCredentialSet(c) }); err != nil {
			t.Fatal(err)
		}
	}
	put(cs)
	stored, err := s.SetCredentialSetHealth(ctx, "default", cs, rules.Health{Status: rules.Healthy})
	if err != nil || !stored {
		t.Fatalf("health of an unchanged set: %v %v", stored, err)
	}
	rewritten := cs
	rewritten.PasswordRef = "p2"
	put(rewritten)
	if stored, _ := s.SetCredentialSetHealth(ctx, "default", cs, rules.Health{Status: rules.Unhealthy}); stored {
		t.Fatal("a stale check overwrote the health of a rewritten set")
	}
	rows, err := s.CredentialHealth(ctx)
	// The rewrite reset the health (unchecked); the stale check left it so.
	if err != nil || len(rows) != 1 || rows[0].Name != "Hub" || rows[0].Status != "" {
		t.Fatalf("credential health: %+v %v", rows, err)
	}
}

// An upload row keeps the session's progress; saving is conditional on
// the size the writer started from, so of two writers one wins, on every
// engine.
func testUploadState(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if _, _, err := s.LoadUploadState(ctx, "nope-nope"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("load of no session: %v", err)
	}
	if err := s.SaveUploadState(ctx, "nope-nope", 0, 1, nil); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("save of no session: %v", err)
	}
	if err := s.CreateUpload(ctx, "reg", "repo", "sess-0001"); err != nil {
		t.Fatal(err)
	}
	if size, st, err := s.LoadUploadState(ctx, "sess-0001"); err != nil || size != 0 || st != nil {
		t.Fatalf("new session: %d %q %v", size, st, err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.SaveUploadState(ctx, "sess-0001", 0, int64(10+i), []byte(fmt.Sprint(10+i)))
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won < 0:
			won = i
		case err == nil:
			t.Fatalf("writers %d and %d both saved from offset 0", won, i)
		case !errors.Is(err, metadata.ErrConflict):
			t.Fatalf("writer %d: %v, want ErrConflict", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no writer won")
	}
	if size, st, err := s.LoadUploadState(ctx, "sess-0001"); err != nil || size != int64(10+won) || string(st) != fmt.Sprint(10+won) {
		t.Fatalf("after the race: %d %q %v; want the winner's", size, st, err)
	}
}
