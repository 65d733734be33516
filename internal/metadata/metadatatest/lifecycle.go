package metadatatest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// Pull times only move forward; they show on tags and repositories; rows
// that are gone are skipped.
func testRecordPulls(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	m := metadata.Manifest{Registry: "r", Repo: "app", Digest: digest.FromString("m"), MediaType: "mt", Size: 10,
		Refs: []metadata.Ref{{Digest: digest.FromString("l"), Kind: metadata.RefBlob}}}
	if err := s.LinkBlob(ctx, "r", "app", digest.FromString("l"), 100); err != nil {
		t.Fatal(err)
	}
	if err := s.PutManifest(ctx, m, "v1"); err != nil {
		t.Fatal(err)
	}
	if at, err := s.RepositoryPulledAt(ctx, "r", "app"); err != nil || !at.IsZero() {
		t.Fatalf("never pulled: %v, %v", at, err)
	}
	t1 := time.Now().Add(-time.Hour).Truncate(time.Microsecond).UTC()
	t2 := t1.Add(30 * time.Minute)
	pulls := []metadata.Pull{
		{Registry: "r", Repo: "app", Kind: metadata.PullManifest, Ref: m.Digest.String(), At: t2},
		{Registry: "r", Repo: "app", Kind: metadata.PullManifest, Ref: m.Digest.String(), At: t1}, // older: ignored
		{Registry: "r", Repo: "app", Kind: metadata.PullTag, Ref: "v1", At: t2},
		{Registry: "r", Repo: "app", Kind: metadata.PullBlob, Ref: digest.FromString("l").String(), At: t1},
		{Registry: "r", Repo: "gone", Kind: metadata.PullTag, Ref: "x", At: t2},
	}
	if err := s.RecordPulls(ctx, pulls); err != nil {
		t.Fatal(err)
	}
	// A replica flushing an older time later changes nothing.
	if err := s.RecordPulls(ctx, []metadata.Pull{{Registry: "r", Repo: "app", Kind: metadata.PullTag, Ref: "v1", At: t1}}); err != nil {
		t.Fatal(err)
	}
	tag, err := s.GetTag(ctx, "r", "app", "v1")
	if err != nil || !tag.PulledAt.Equal(t2) {
		t.Fatalf("tag pulled at %v (%v), want %v", tag.PulledAt, err, t2)
	}
	if at, err := s.RepositoryPulledAt(ctx, "r", "app"); err != nil || !at.Equal(t2) {
		t.Fatalf("repository pulled at %v (%v), want %v", at, err, t2)
	}
	if err := s.RecordPulls(ctx, []metadata.Pull{{Registry: "r", Repo: "app", Kind: "bogus", Ref: "x", At: t1}}); err == nil {
		t.Fatal("unknown kind accepted")
	}
}

// Eviction lists cached content least recently used first (pulled, or
// stored when never pulled), never pushed repositories; evicting a
// manifest takes its tags and the blob links only it needed, and usage
// drops by what EvictCached reports.
func testEvictCached(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	shared, onlyOld, onlyNew, stray := digest.FromString("shared"), digest.FromString("old-layer"), digest.FromString("new-layer"), digest.FromString("stray")
	for d, size := range map[digest.Digest]int64{shared: 1000, onlyOld: 200, onlyNew: 300, stray: 50} {
		if err := s.LinkBlob(ctx, "r", "cached/app", d, size); err != nil {
			t.Fatal(err)
		}
	}
	oldM := metadata.Manifest{Registry: "r", Repo: "cached/app", Digest: digest.FromString("old"), MediaType: "mt", Size: 5,
		Refs: []metadata.Ref{{Digest: shared, Kind: metadata.RefBlob}, {Digest: onlyOld, Kind: metadata.RefBlob}}}
	newM := metadata.Manifest{Registry: "r", Repo: "cached/app", Digest: digest.FromString("new"), MediaType: "mt", Size: 7,
		Refs: []metadata.Ref{{Digest: shared, Kind: metadata.RefBlob}, {Digest: onlyNew, Kind: metadata.RefBlob}}}
	if err := s.PutManifest(ctx, oldM, "old"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutManifest(ctx, newM, "new"); err != nil {
		t.Fatal(err)
	}
	pushed := metadata.Manifest{Registry: "r", Repo: "mine", Digest: digest.FromString("p"), MediaType: "mt", Size: 9}
	if err := s.PutManifest(ctx, pushed, "v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkPushed(ctx, "r", "mine"); err != nil {
		t.Fatal(err)
	}
	// Another registry's cached content is not listed.
	if err := s.PutManifest(ctx, metadata.Manifest{Registry: "other", Repo: "cached/app", Digest: digest.FromString("x"), MediaType: "mt", Size: 1}); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := s.RecordPulls(ctx, []metadata.Pull{
		{Registry: "r", Repo: "cached/app", Kind: metadata.PullManifest, Ref: newM.Digest.String(), At: now.Add(time.Hour)},
		{Registry: "r", Repo: "cached/app", Kind: metadata.PullManifest, Ref: oldM.Digest.String(), At: now.Add(time.Minute)},
		{Registry: "r", Repo: "cached/app", Kind: metadata.PullBlob, Ref: stray.String(), At: now.Add(30 * time.Minute)},
	}); err != nil {
		t.Fatal(err)
	}
	items, err := s.CachedItems(ctx, "r", now.Add(2*time.Hour), metadata.CachedCursor{}, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []digest.Digest
	for _, it := range items {
		got = append(got, it.Digest)
	}
	want := []digest.Digest{oldM.Digest, stray, newM.Digest}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("cached items %v, want %v (least recently used first, no pushed, no referenced blob links)", got, want)
	}
	// Paging: the cursor continues after an item; before bounds by time.
	page, err := s.CachedItems(ctx, "r", now.Add(2*time.Hour), items[0].Cursor(), 1)
	if err != nil || len(page) != 1 || page[0].Digest != stray {
		t.Fatalf("page after the first: %v, %v", page, err)
	}
	if early, err := s.CachedItems(ctx, "r", now.Add(10*time.Minute), metadata.CachedCursor{}, 10); err != nil || len(early) != 1 || early[0].Digest != oldM.Digest {
		t.Fatalf("items used before now+10m: %v, %v", early, err)
	}

	before := cachedBytes(t, s, "r")
	if freed, err := s.EvictCached(ctx, "r", items[0], true); err != nil || freed != 5+200 {
		t.Fatalf("dry run: would free %d, %v; want 205", freed, err)
	}
	if after := cachedBytes(t, s, "r"); after != before {
		t.Fatalf("a dry run changed usage from %d to %d", before, after)
	}
	freed, err := s.EvictCached(ctx, "r", items[0], false)
	if err != nil {
		t.Fatal(err)
	}
	if freed != 5+200 {
		t.Fatalf("evicting the old manifest freed %d bytes, want 205 (manifest + the layer only it used)", freed)
	}
	if after := cachedBytes(t, s, "r"); after != before-freed {
		t.Fatalf("usage %d after evicting %d of %d", after, freed, before)
	}
	if _, err := s.GetTag(ctx, "r", "cached/app", "old"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("tag of the evicted manifest: %v", err)
	}
	if _, err := s.GetManifest(ctx, "r", "cached/app", oldM.Digest); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("evicted manifest: %v", err)
	}
	if _, err := s.BlobSize(ctx, "r", "cached/app", shared); err != nil {
		t.Fatalf("the layer the other manifest uses is gone: %v", err)
	}
	if _, err := s.BlobSize(ctx, "r", "cached/app", onlyOld); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("the layer only the evicted manifest used: %v", err)
	}
	if _, err := s.EvictCached(ctx, "r", items[0], false); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("evicting again: %v", err)
	}
	if freed, err := s.EvictCached(ctx, "r", items[1], false); err != nil || freed != 50 {
		t.Fatalf("stray blob link: freed %d, %v", freed, err)
	}
	// A blob link a manifest references is not a stray one.
	if _, err := s.EvictCached(ctx, "r", metadata.CachedItem{Repo: "cached/app", Kind: metadata.PullBlob, Digest: shared}, false); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("evicting a referenced blob link: %v", err)
	}
	if _, err := s.EvictCached(ctx, "r", metadata.CachedItem{Repo: "mine", Kind: metadata.PullManifest, Digest: pushed.Digest}, false); !errors.Is(err, metadata.ErrPushed) {
		t.Fatalf("evicting pushed content: %v", err)
	}
	if _, err := s.GetManifest(ctx, "r", "mine", pushed.Digest); err != nil {
		t.Fatal(err)
	}
}

func cachedBytes(t *testing.T, s metadata.Store, registry string) int64 {
	t.Helper()
	us, err := s.RegistryUsage(context.Background(), registry)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, u := range us {
		if u.Registry != registry {
			t.Fatalf("usage of %s lists %s", registry, u.Registry)
		}
		if !u.Pushed {
			n += u.Bytes()
		}
	}
	return n
}

// Quotas and retention days are stored with the registry and the rule.
func testQuotasAndRetention(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if err := s.SyncRegistries(ctx, []metadata.RegistryRecord{{Name: "reg01"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRegistrySettings(ctx, "reg01", func(a *metadata.RegistrySettings) error {
		a.CacheQuota, a.StorageQuota = 20<<30, 50<<30
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	a, err := s.GetRegistrySettings(ctx, "reg01")
	if err != nil || a.CacheQuota != 20<<30 || a.StorageQuota != 50<<30 {
		t.Fatalf("quotas %d, %d (%v)", a.CacheQuota, a.StorageQuota, err)
	}
	r := rules.Rule{Name: "hub", Source: "docker.io/library/*", Target: "hub/*", CredentialSet: "cs", RetentionDays: 30,
		ProvisioningState: rules.StateSucceeded, CreatedAt: time.Now(), ModifiedAt: time.Now()}
	if err := s.UpdateRules(ctx, "reg01", func(tx metadata.RulesTx) error { return tx.PutCacheRule(r) }); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetCacheRule(ctx, "reg01", "hub")
	if err != nil || got.RetentionDays != 30 {
		t.Fatalf("retention days %d (%v)", got.RetentionDays, err)
	}
}

// PushedBytes is the sum RegistryUsage gives for the pushed repositories
// of a registry: cached repositories and other registries do not count, a
// blob linked from two pushed repositories counts in each.
func testPushedBytes(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if n, err := s.PushedBytes(ctx, "r"); err != nil || n != 0 {
		t.Fatalf("empty: %d, %v", n, err)
	}
	layer, other := digest.FromString("layer"), digest.FromString("other")
	for _, l := range []struct {
		reg, repo string
		d         digest.Digest
		size      int64
	}{{"r", "mine/a", layer, 1000}, {"r", "mine/b", layer, 1000}, {"r", "mine/b", other, 30}, {"r", "cached/x", other, 30}, {"o", "mine/a", layer, 1000}} {
		if err := s.LinkBlob(ctx, l.reg, l.repo, l.d, l.size); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range []metadata.Manifest{
		{Registry: "r", Repo: "mine/a", Digest: digest.FromString("ma"), MediaType: "mt", Size: 7},
		{Registry: "r", Repo: "cached/x", Digest: digest.FromString("mx"), MediaType: "mt", Size: 5},
		{Registry: "o", Repo: "mine/a", Digest: digest.FromString("mo"), MediaType: "mt", Size: 3},
	} {
		if err := s.PutManifest(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range [][2]string{{"r", "mine/a"}, {"r", "mine/b"}, {"o", "mine/a"}} {
		if err := s.MarkPushed(ctx, p[0], p[1]); err != nil {
			t.Fatal(err)
		}
	}
	us, err := s.RegistryUsage(ctx, "r")
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, u := range us {
		if u.Pushed {
			want += u.Bytes()
		}
	}
	if n, err := s.PushedBytes(ctx, "r"); err != nil || n != want || n != 1000+1000+30+7 {
		t.Fatalf("PushedBytes = %d, %v; want %d (RegistryUsage's pushed sum %d)", n, err, 1000+1000+30+7, want)
	}
}

// Replicas flushing the same rows at once: no error (no lock cycle), and
// each row ends at the latest time any of them recorded.
func testRecordPullsConcurrent(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	var tags []string
	for i := range 20 {
		tag := fmt.Sprintf("t%02d", i)
		tags = append(tags, tag)
		if err := s.PutManifest(ctx, metadata.Manifest{Registry: "r", Repo: "app", Digest: digest.FromString(tag), MediaType: "mt", Size: 1}, tag); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Now().Truncate(time.Microsecond).UTC()
	latest := base.Add(time.Hour)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 10 {
				var batch []metadata.Pull
				for i := range tags {
					// Writers visit the rows in different orders (rotated,
					// and reversed for odd writers).
					j := (i + 7*w + round) % len(tags)
					if w%2 == 1 {
						j = len(tags) - 1 - j
					}
					tag := tags[j]
					at := base.Add(time.Duration(w*10+round) * time.Second)
					if w == 3 && round == 9 {
						at = latest
					}
					batch = append(batch, metadata.Pull{Registry: "r", Repo: "app", Kind: metadata.PullTag, Ref: tag, At: at},
						metadata.Pull{Registry: "r", Repo: "app", Kind: metadata.PullManifest, Ref: digest.FromString(tag).String(), At: at})
				}
				if err := s.RecordPulls(ctx, batch); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, tag := range tags {
		tg, err := s.GetTag(ctx, "r", "app", tag)
		if err != nil || !tg.PulledAt.Equal(latest) {
			t.Errorf("tag %s pulled at %v (%v), want the latest %v", tag, tg.PulledAt, err, latest)
		}
	}
}

// What active sync keeps current: the manifests the rule's tracked tags
// resolved to (failed ones too, not excluded ones), what they reference,
// nested, and with referrers their referrers; nothing of another rule or
// registry, nor a manifest only a client pulled.
func testSyncKeptManifests(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	put := func(reg, repo, name string, subject digest.Digest, refs ...digest.Digest) digest.Digest {
		t.Helper()
		m := metadata.Manifest{Registry: reg, Repo: repo, Digest: digest.FromString(name), MediaType: "mt", Size: 1, Subject: subject}
		for _, r := range refs {
			m.Refs = append(m.Refs, metadata.Ref{Digest: r, Kind: metadata.RefManifest})
		}
		var tags []string
		if strings.HasPrefix(name, "tagged:") {
			tags = []string{strings.TrimPrefix(name, "tagged:")}
		}
		if err := s.PutManifest(ctx, m, tags...); err != nil {
			t.Fatal(err)
		}
		return m.Digest
	}
	leaf := put("r", "synced/app", "leaf", "")
	child := put("r", "synced/app", "child", "", leaf) // a nested index
	other := put("r", "synced/app", "other-child", "")
	idx := put("r", "synced/app", "tagged:v1", "", child, other)
	sig := put("r", "synced/app", "signature", child)
	failed := put("r", "synced/app", "tagged:v2", "")
	excluded := put("r", "synced/app", "tagged:x", "")
	pulled := put("r", "synced/app", "tagged:old", "") // a client pulled it through
	elsewhere := put("r", "synced/other", "tagged:v1", "")
	put("o", "synced/app", "tagged:v9", "")
	for _, st := range []metadata.SyncTag{
		{Registry: "r", Rule: "Sync", Repo: "synced/app", Tag: "v1", Digest: idx.String(), State: "done"},
		{Registry: "r", Rule: "Sync", Repo: "synced/app", Tag: "v2", Digest: failed.String(), State: "failed", Error: "boom"},
		{Registry: "r", Rule: "Sync", Repo: "synced/app", Tag: "x", Digest: excluded.String(), State: "excluded"},
		{Registry: "r", Rule: "Sync", Repo: "synced/app", Tag: "never", State: "failed", Error: "unreachable"},
		{Registry: "r", Rule: "Another", Repo: "synced/other", Tag: "v1", Digest: elsewhere.String(), State: "done"},
		{Registry: "o", Rule: "Sync", Repo: "synced/app", Tag: "v9", Digest: digest.FromString("tagged:v9").String(), State: "done"},
	} {
		if err := s.PutSyncTag(ctx, st); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		referrers bool
		want      []digest.Digest
	}{
		{false, []digest.Digest{leaf, child, other, idx, failed}},
		{true, []digest.Digest{leaf, child, other, idx, sig, failed}},
	} {
		got, err := s.SyncKeptManifests(ctx, "R", "sync", c.referrers)
		if err != nil {
			t.Fatal(err)
		}
		set := map[digest.Digest]bool{}
		for _, k := range got {
			if k.Repo != "synced/app" {
				t.Errorf("referrers %v: %s in %s", c.referrers, k.Digest, k.Repo)
			}
			set[k.Digest] = true
		}
		if set[pulled] || set[excluded] {
			t.Errorf("referrers %v: a client's or an excluded tag's manifest kept: %v", c.referrers, got)
		}
		for _, d := range c.want {
			if !set[d] {
				t.Errorf("referrers %v: %s not kept (got %v)", c.referrers, d, got)
			}
		}
		if len(got) != len(c.want) {
			t.Errorf("referrers %v: got %v, want %v", c.referrers, got, c.want)
		}
	}
}
