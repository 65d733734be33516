package metadatatest

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
)

func gcState(t *testing.T, s metadata.Store) map[digest.Digest]metadata.GCBlob {
	t.Helper()
	out := map[digest.Digest]metadata.GCBlob{}
	var after digest.Digest
	for {
		page, more, err := s.GCBlobs(context.Background(), after, 2) // small pages: paging is exercised
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page {
			out[b.Digest] = b
		}
		if !more {
			return out
		}
		after = page[len(page)-1].Digest
	}
}

func digestsOf(refs []metadata.BlobRef) []digest.Digest {
	var out []digest.Digest
	for _, r := range refs {
		out = append(out, r.Digest)
	}
	return out
}

// A blob is referenced by a link, by being a manifest, or by a manifest's
// reference; GC marks only unreferenced ones, claims only those marked
// before the cutoff, and a claimed blob refuses new references until its
// row is forgotten.
func testGCBlobLifecycle(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	linked, layer, loose := digest.FromString("linked"), digest.FromString("layer"), digest.FromString("loose")
	if err := s.LinkBlob(ctx, "r", "app", linked, 10); err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareBlob(ctx, layer, 20); err != nil {
		t.Fatal(err)
	}
	m := metadata.Manifest{Registry: "r", Repo: "app", Digest: digest.FromString("m"), MediaType: "mt", Size: 5,
		Refs: []metadata.Ref{{Digest: layer, Kind: metadata.RefBlob}}}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.PrepareBlob(ctx, loose, 30); err != nil {
		t.Fatal(err)
	}
	st := gcState(t, s)
	if len(st) != 4 {
		t.Fatalf("GCBlobs: %d rows, want 4 (linked, layer, manifest, loose): %v", len(st), st)
	}
	for d, want := range map[digest.Digest]bool{linked: true, layer: true, m.Digest: true, loose: false} {
		if st[d].Referenced != want {
			t.Errorf("%s referenced = %v, want %v", d, st[d].Referenced, want)
		}
	}
	all := []digest.Digest{linked, layer, m.Digest, loose}
	mark := time.Now()
	if n, err := s.MarkBlobs(ctx, all, mark); err != nil || n != 1 {
		t.Fatalf("MarkBlobs = %d, %v; want only the loose blob marked", n, err)
	}
	if got := gcState(t, s)[loose].MarkedAt; !got.Equal(mark.Truncate(time.Microsecond)) {
		t.Fatalf("loose marked at %v, want %v", got, mark)
	}
	// Marked after the cutoff: not claimed yet.
	if c, err := s.ClaimBlobs(ctx, all, mark.Add(-time.Second), time.Now()); err != nil || len(c) != 0 {
		t.Fatalf("ClaimBlobs before the grace ended = %v, %v; want none", c, err)
	}
	claimAt := time.Now()
	c, err := s.ClaimBlobs(ctx, all, mark.Add(time.Second), claimAt)
	if err != nil || !slices.Equal(digestsOf(c), []digest.Digest{loose}) || c[0].Size != 30 {
		t.Fatalf("ClaimBlobs = %v, %v; want the loose blob (30 bytes)", c, err)
	}
	if err := s.LinkBlob(ctx, "r", "other", loose, 30); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("LinkBlob of a claimed blob = %v, want ErrNotFound", err)
	}
	if ok, _ := s.RepositoryExists(ctx, "r", "other"); ok {
		t.Error("a refused link created its repository")
	}
	// A claim that did not finish is claimed again by the next run.
	again := time.Now()
	if c, err := s.ClaimBlobs(ctx, []digest.Digest{loose}, mark.Add(-time.Hour), again); err != nil || len(c) != 1 {
		t.Fatalf("ClaimBlobs of a claimed blob = %v, %v; want it again", c, err)
	}
	if n, err := s.ForgetBlobs(ctx, []digest.Digest{loose}, claimAt); err != nil || n != 0 {
		t.Fatalf("ForgetBlobs with a superseded claim time = %d, %v; want 0", n, err)
	}
	if n, err := s.ForgetBlobs(ctx, []digest.Digest{loose, linked}, again); err != nil || n != 1 {
		t.Fatalf("ForgetBlobs = %d, %v; want 1 (the claimed one only)", n, err)
	}
	if _, ok := gcState(t, s)[loose]; ok {
		t.Fatal("forgotten blob still has a row")
	}
	if err := s.LinkBlob(ctx, "r", "other", loose, 30); err != nil {
		t.Fatalf("LinkBlob after the blob was forgotten: %v", err)
	}
}

// Creating a reference clears a mark (a link, a manifest's reference, a
// manifest's own row), so a blob referenced after it was marked and
// unreferenced again waits a whole grace period from its next mark.
func testGCMarkClearedByReference(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	a, b := digest.FromString("a"), digest.FromString("b")
	for _, d := range []digest.Digest{a, b} {
		if err := s.PrepareBlob(ctx, d, 1); err != nil {
			t.Fatal(err)
		}
	}
	mark := time.Now().Add(-time.Hour)
	if n, err := s.MarkBlobs(ctx, []digest.Digest{a, b}, mark); err != nil || n != 2 {
		t.Fatalf("MarkBlobs = %d, %v", n, err)
	}
	if err := s.LinkBlob(ctx, "r", "app", a, 1); err != nil {
		t.Fatal(err)
	}
	m := metadata.Manifest{Registry: "r", Repo: "app", Digest: digest.FromString("m"), MediaType: "mt", Size: 1,
		Refs: []metadata.Ref{{Digest: b, Kind: metadata.RefBlob}}}
	if err := s.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := s.UnlinkBlob(ctx, "r", "app", a); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteManifest(ctx, "r", "app", m.Digest); err != nil {
		t.Fatal(err)
	}
	if c, err := s.ClaimBlobs(ctx, []digest.Digest{a, b, m.Digest}, time.Now(), time.Now()); err != nil || len(c) != 0 {
		t.Fatalf("ClaimBlobs after re-reference = %v, %v; want none (marks cleared)", c, err)
	}
	// A stale mark on a referenced blob is cleared by the next mark pass.
	if err := s.PrepareBlob(ctx, digest.FromString("c"), 1); err != nil {
		t.Fatal(err)
	}
	c := digest.FromString("c")
	if n, _ := s.MarkBlobs(ctx, []digest.Digest{c}, mark); n != 1 {
		t.Fatal("c not marked")
	}
	if err := s.LinkBlob(ctx, "r", "app", c, 1); err != nil {
		t.Fatal(err)
	}
	if n, err := s.MarkBlobs(ctx, []digest.Digest{a, b, c, m.Digest}, time.Now()); err != nil || n != 3 {
		t.Fatalf("MarkBlobs = %d, %v; want a, b and the manifest marked, c not", n, err)
	}
	if !gcState(t, s)[c].MarkedAt.IsZero() {
		t.Fatal("c still marked while linked")
	}
}

// PrepareBlob waits while GC deletes the same digest and returns once the
// row is forgotten; a claim older than ClaimTTL is taken over at once.
func testGCPrepareWaitsForDeletion(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	d := digest.FromString("d")
	if err := s.PrepareBlob(ctx, d, 1); err != nil {
		t.Fatal(err)
	}
	mark := time.Now().Add(-time.Hour)
	if _, err := s.MarkBlobs(ctx, []digest.Digest{d}, mark); err != nil {
		t.Fatal(err)
	}
	claimAt := time.Now()
	if c, err := s.ClaimBlobs(ctx, []digest.Digest{d}, time.Now(), claimAt); err != nil || len(c) != 1 {
		t.Fatalf("claim: %v, %v", c, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.PrepareBlob(ctx, d, 1) }()
	select {
	case err := <-done:
		t.Fatalf("PrepareBlob returned (%v) while the blob is being deleted", err)
	case <-time.After(300 * time.Millisecond):
	}
	if n, err := s.ForgetBlobs(ctx, []digest.Digest{d}, claimAt); err != nil || n != 1 {
		t.Fatalf("forget: %d, %v", n, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PrepareBlob still waiting after the deletion ended")
	}
	if b := gcState(t, s)[d]; b.Digest != d || !b.MarkedAt.IsZero() || !b.DeletingAt.IsZero() {
		t.Fatalf("after PrepareBlob: %+v, want a fresh row", b)
	}
	// A claim left by a GC that died long ago is taken over.
	if _, err := s.MarkBlobs(ctx, []digest.Digest{d}, mark); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.ClaimBlobs(ctx, []digest.Digest{d}, time.Now(), time.Now().Add(-2*metadata.ClaimTTL)); len(c) != 1 {
		t.Fatal("claim failed")
	}
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.PrepareBlob(tctx, d, 1); err != nil {
		t.Fatalf("PrepareBlob over a stale claim: %v", err)
	}
	if b := gcState(t, s)[d]; !b.DeletingAt.IsZero() {
		t.Fatal("stale claim not taken over")
	}
}

// Bytes with no row are orphans: claiming inserts their rows claimed;
// bytes with a row are left alone.
func testGCOrphans(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	known, orphan := digest.FromString("known"), digest.FromString("orphan")
	if err := s.PrepareBlob(ctx, known, 1); err != nil {
		t.Fatal(err)
	}
	k, err := s.KnownBlobs(ctx, []digest.Digest{known, orphan})
	if err != nil || !slices.Equal(k, []digest.Digest{known}) {
		t.Fatalf("KnownBlobs = %v, %v", k, err)
	}
	at := time.Now()
	c, err := s.ClaimOrphans(ctx, []metadata.BlobRef{{Digest: known, Size: 1}, {Digest: orphan, Size: 7}}, at)
	if err != nil || !slices.Equal(digestsOf(c), []digest.Digest{orphan}) {
		t.Fatalf("ClaimOrphans = %v, %v; want the orphan only", c, err)
	}
	if err := s.LinkBlob(ctx, "r", "app", orphan, 7); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("LinkBlob of a claimed orphan = %v, want ErrNotFound", err)
	}
	if n, err := s.ForgetBlobs(ctx, []digest.Digest{orphan}, at); err != nil || n != 1 {
		t.Fatalf("ForgetBlobs = %d, %v", n, err)
	}
}

// Untagged manifests: only those no tag, index or (present) subject
// keeps, created before the cutoff; deleting an index frees its children.
func testGCUntaggedManifests(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	put := func(name string, refs []metadata.Ref, subject digest.Digest, tags ...string) digest.Digest {
		t.Helper()
		m := metadata.Manifest{Registry: "r", Repo: "app", Digest: digest.FromString(name), MediaType: "mt", Size: int64(len(name)), Refs: refs, Subject: subject}
		if err := s.PutManifest(ctx, m, tags...); err != nil {
			t.Fatal(err)
		}
		return m.Digest
	}
	tagged := put("tagged", nil, "", "v1")
	loose := put("loose", nil, "")
	child := put("child", nil, "")
	index := put("index", []metadata.Ref{{Digest: child, Kind: metadata.RefManifest}}, "")
	sig := put("sig", nil, tagged)
	orphanSig := put("orphan-sig", nil, digest.FromString("gone"))
	// Another registry's untagged manifest is not this registry's.
	if err := s.PutManifest(ctx, metadata.Manifest{Registry: "other", Repo: "app", Digest: loose, MediaType: "mt", Size: 5}); err != nil {
		t.Fatal(err)
	}
	before := time.Now().Add(time.Minute)
	list := func() []digest.Digest {
		t.Helper()
		var out []digest.Digest
		var after metadata.ManifestKey
		for {
			page, more, err := s.UntaggedManifests(ctx, "r", before, after, 1)
			if err != nil {
				t.Fatal(err)
			}
			for _, k := range page {
				if k.Repo != "app" {
					t.Fatalf("repo %q", k.Repo)
				}
				out = append(out, k.Digest)
			}
			if !more {
				slices.Sort(out)
				return out
			}
			after = page[len(page)-1]
		}
	}
	want := []digest.Digest{loose, index, orphanSig}
	slices.Sort(want)
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("UntaggedManifests = %v, want %v (not tagged, child of index, referrer of tagged)", got, want)
	}
	if ok, err := s.DeleteUntaggedManifest(ctx, "r", "app", tagged, before); err != nil || ok {
		t.Fatalf("DeleteUntaggedManifest(tagged) = %v, %v", ok, err)
	}
	if ok, err := s.DeleteUntaggedManifest(ctx, "r", "app", index, time.Now().Add(-time.Hour)); err != nil || ok {
		t.Fatalf("DeleteUntaggedManifest of a manifest newer than the cutoff = %v, %v", ok, err)
	}
	if ok, err := s.DeleteUntaggedManifest(ctx, "r", "app", index, before); err != nil || !ok {
		t.Fatalf("DeleteUntaggedManifest(index) = %v, %v", ok, err)
	}
	if _, err := s.GetManifest(ctx, "r", "app", index); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatal("index still there")
	}
	want = []digest.Digest{loose, child, orphanSig}
	slices.Sort(want)
	if got := list(); !slices.Equal(got, want) {
		t.Fatalf("after deleting the index: %v, want %v", got, want)
	}
	if _, err := s.GetManifest(ctx, "r", "app", sig); err != nil {
		t.Fatal(err)
	}
}

// Retention policies: disabled with ACR's 7 days until set.
func testRetentionPolicies(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	p, err := s.GetRetentionPolicy(ctx, "Reg")
	if err != nil || p.Enabled || p.Days != metadata.DefaultRetentionDays {
		t.Fatalf("default policy = %+v, %v", p, err)
	}
	if err := s.PutRetentionPolicy(ctx, metadata.RetentionPolicy{Registry: "Reg", Enabled: true, Days: 0}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutRetentionPolicy(ctx, metadata.RetentionPolicy{Registry: "off", Enabled: false, Days: 3}); err != nil {
		t.Fatal(err)
	}
	p, err = s.GetRetentionPolicy(ctx, "reg")
	if err != nil || !p.Enabled || p.Days != 0 || p.UpdatedAt.IsZero() {
		t.Fatalf("policy = %+v, %v", p, err)
	}
	en, err := s.EnabledRetentionPolicies(ctx)
	if err != nil || len(en) != 1 || en[0].Registry != "reg" {
		t.Fatalf("EnabledRetentionPolicies = %+v, %v", en, err)
	}
}
