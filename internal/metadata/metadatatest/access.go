package metadatatest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/metadata"
)

// Registries created through the API: settings round trip, hosts, the
// managed list, and deletion of everything recorded for one.
func testRegistries(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if err := s.SyncRegistries(ctx, []metadata.RegistryRecord{{Name: "Default"}}); err != nil {
		t.Fatal(err)
	}
	set := metadata.RegistrySettings{AdminEnabled: true, SKU: "Premium", Tags: map[string]string{"team": "a"},
		PublicNetworkAccess: "Enabled", DataEndpointEnabled: true, RoleAssignmentMode: "LegacyRegistryPermissions"}
	if err := s.CreateRegistry(ctx, metadata.RegistryRecord{Name: "Team", Hosts: []string{"team.example"}}, set); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRegistrySettings(ctx, "TEAM")
	if err != nil || !got.AdminEnabled || got.AnonymousPull || got.SKU != "Premium" || got.Tags["team"] != "a" || !got.DataEndpointEnabled || got.Created.IsZero() {
		t.Fatalf("settings: %+v %v", got, err)
	}
	err = s.UpdateRegistrySettings(ctx, "team", func(a *metadata.RegistrySettings) error {
		a.AnonymousPull, a.AdminPasswords[0] = true, "hash1"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetRegistrySettings(ctx, "team"); !got.AnonymousPull || got.AdminPasswords[0] != "hash1" || !got.AdminEnabled {
		t.Fatalf("updated settings: %+v", got)
	}
	if _, err := s.GetRegistrySettings(ctx, "nosuch"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("missing registry: %v", err)
	}
	if err := s.SetRegistryHosts(ctx, "team", []string{"a.example", "b.example"}); err != nil {
		t.Fatal(err)
	}
	managed, err := s.ManagedRegistries(ctx)
	if err != nil || len(managed) != 1 || managed[0].Name != "team" || len(managed[0].Hosts) != 2 {
		t.Fatalf("managed: %+v %v", managed, err)
	}
	if err := s.LinkBlob(ctx, "team", "app", digest.FromString("team-blob"), 1); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRegistry(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if repos, _, _ := s.ListRepositories(ctx, "team", "", 0); len(repos) != 0 {
		t.Fatalf("repositories of a deleted registry: %v", repos)
	}
	if managed, _ := s.ManagedRegistries(ctx); len(managed) != 0 {
		t.Fatalf("managed after delete: %+v", managed)
	}
}

// Scope maps and tokens: names ignore case, a scope map in use is not
// deleted (ErrConflict), token updates are read-modify-write.
func testScopeMapsAndTokens(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	created, err := s.PutScopeMap(ctx, "default", metadata.ScopeMap{Name: "Pull", Actions: []string{"repositories/*/content/read"}})
	if err != nil || !created {
		t.Fatalf("put scope map: %v %v", created, err)
	}
	if created, err := s.PutScopeMap(ctx, "default", metadata.ScopeMap{Name: "PULL", Description: "d", Actions: []string{"a"}}); err != nil || created {
		t.Fatalf("replace scope map in another case: created=%v %v", created, err)
	}
	m, err := s.GetScopeMap(ctx, "default", "pull")
	if err != nil || m.Name != "Pull" || m.Description != "d" || len(m.Actions) != 1 {
		t.Fatalf("scope map %+v %v", m, err)
	}
	for _, name := range []string{"B-token", "a-token"} {
		_, err := s.UpdateToken(ctx, "default", name, func(tk *metadata.Token, created bool) error {
			if !created {
				return errors.New("not new")
			}
			tk.ScopeMap, tk.Status = "pull", "enabled"
			tk.Passwords = []metadata.TokenPassword{{Name: "password1", Hash: "h", Created: time.Unix(1700000000, 0).UTC()}}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListTokens(ctx, "default")
	if err != nil || len(list) != 2 || list[0].Name != "a-token" || list[1].Name != "B-token" {
		t.Fatalf("tokens in name order ignoring case: %+v %v", list, err)
	}
	if err := s.DeleteScopeMap(ctx, "default", "PULL"); !errors.Is(err, metadata.ErrConflict) {
		t.Fatalf("delete of a scope map in use: %v, want ErrConflict", err)
	}
	// Concurrent updates of one token all apply (none lost).
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateToken(ctx, "default", "A-TOKEN", func(tk *metadata.Token, _ bool) error {
				tk.Passwords = append(tk.Passwords, metadata.TokenPassword{Name: fmt.Sprint("p", i)})
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if tk, err := s.GetToken(ctx, "default", "a-token"); err != nil || len(tk.Passwords) != 9 {
		t.Fatalf("token after 8 concurrent updates: %d passwords, %v (want 9)", len(tk.Passwords), err)
	}
	for _, name := range []string{"a-token", "b-TOKEN"} {
		if err := s.DeleteToken(ctx, "default", name); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteToken(ctx, "default", "a-token"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if err := s.DeleteScopeMap(ctx, "default", "pull"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetScopeMap(ctx, "default", "Pull"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("deleted scope map: %v", err)
	}
}

// Replicas rotating the signing key at once store one key.
func testSigningKeysAndRefreshTokens(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	start := time.Now().UTC().Truncate(time.Microsecond)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := metadata.SigningKey{ID: fmt.Sprint("k", i), Secret: []byte{0, 1, 2, byte(i)}, Created: start.Add(time.Duration(i) * time.Millisecond)}
			if err := s.AddSigningKey(ctx, k, start.Add(-time.Hour), start.Add(-48*time.Hour)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	keys, err := s.SigningKeys(ctx)
	if err != nil || len(keys) != 1 || len(keys[0].Secret) != 4 || keys[0].Secret[0] != 0 {
		t.Fatalf("signing keys after 4 concurrent rotations: %+v %v", keys, err)
	}
	rt := metadata.RefreshToken{Hash: "h1", Registry: "Default", Kind: "token", Subject: "CI", Stamp: "s",
		Created: start, Expires: start.Add(time.Hour)}
	if err := s.PutRefreshToken(ctx, rt); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeRefreshTokens(ctx, "default", "token", "ci"); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRefreshToken(ctx, "h1")
	if err != nil || !got.Revoked || got.Registry != "default" || !got.Expires.Equal(rt.Expires) {
		t.Fatalf("refresh token %+v %v", got, err)
	}
	if _, err := s.GetRefreshToken(ctx, "nosuch"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("missing refresh token: %v", err)
	}
}

func testPrincipalsAndAudit(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	p := metadata.Principal{Name: "Deployer", Role: "Contributor", Registry: "default", Salt: []byte{1}, Hash: []byte{2, 3}}
	if err := s.PutPrincipal(ctx, p); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetPrincipal(ctx, "deployer")
	if err != nil || got.Name != "Deployer" || string(got.Hash) != string(p.Hash) {
		t.Fatalf("principal %+v %v", got, err)
	}
	if list, _ := s.ListPrincipals(ctx); len(list) != 1 {
		t.Fatalf("principals %+v", list)
	}
	if err := s.DeletePrincipal(ctx, "DEPLOYER"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeletePrincipal(ctx, "deployer"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	base := time.Now().UTC().Truncate(time.Microsecond)
	for i := range 3 {
		if err := s.AddAudit(ctx, metadata.AuditEntry{At: armtime.Of(base.Add(time.Duration(i) * time.Second)), Who: "admin", Action: fmt.Sprint("a", i), Resource: "/r", Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	// Past retention: dropped by the next entry.
	if err := s.AddAudit(ctx, metadata.AuditEntry{At: armtime.Of(base.Add(-metadata.AuditRetention - time.Hour)), Who: "old", Action: "x", Resource: "/r", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAudit(ctx, metadata.AuditEntry{At: armtime.Of(base.Add(3 * time.Second)), Who: "admin", Action: "a3", Resource: "/r", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	log, err := s.ListAudit(ctx, base.Add(time.Second), 2)
	if err != nil || len(log) != 2 || log[0].Action != "a3" || log[1].Action != "a2" || !log[1].At.Equal(base.Add(2*time.Second)) {
		t.Fatalf("audit newest first, since, limit: %+v %v", log, err)
	}
	if all, _ := s.ListAudit(ctx, time.Time{}, 100); len(all) != 4 {
		t.Fatalf("audit after retention: %d entries, want 4", len(all))
	}
}

// Owned upload sessions: the quota counts open sessions per owner; the
// janitor lists old ones.
func testOwnedUploads(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	for i := range 2 {
		if err := s.CreateOwnedUpload(ctx, "r", "repo", fmt.Sprint("u", i), "token:ci", 2, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateOwnedUpload(ctx, "r", "repo", "u2", "token:ci", 2, time.Hour); !errors.Is(err, metadata.ErrQuota) {
		t.Fatalf("third session: %v, want ErrQuota", err)
	}
	if err := s.CreateOwnedUpload(ctx, "r", "repo", "u3", "token:other", 2, time.Hour); err != nil {
		t.Fatal(err)
	}
	started, ok, err := s.UploadStarted(ctx, "r", "repo", "u0")
	if err != nil || !ok || time.Since(started) > time.Minute {
		t.Fatalf("started %v %v %v", started, ok, err)
	}
	if old, err := s.UploadsBefore(ctx, time.Now().Add(time.Minute)); err != nil || len(old) != 3 {
		t.Fatalf("uploads before now+1m: %v %v", old, err)
	} else {
		for _, u := range old {
			if u.Registry != "r" {
				t.Errorf("upload %s: registry %q, want r", u.ID, u.Registry)
			}
		}
	}
	if old, _ := s.UploadsBefore(ctx, time.Now().Add(-time.Minute)); len(old) != 0 {
		t.Fatalf("uploads before now-1m: %v", old)
	}
}
