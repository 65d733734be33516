package metadatatest

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/metadata"
)

// Repository details count manifests and tags with their times and pull
// times; tag and manifest listings page by name and by time both ways;
// deleting a repository removes all of its rows and nothing of another's.
func testRepositoryInfo(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	if _, err := s.RepositoryInfo(ctx, "r", "app"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("unknown repository: %v", err)
	}
	put := func(repo, name string, tags ...string) digest.Digest {
		t.Helper()
		m := metadata.Manifest{Registry: "r", Repo: repo, Digest: digest.FromString(name), MediaType: "mt", Size: int64(len(name)),
			Refs: []metadata.Ref{{Digest: digest.FromString("layer"), Kind: metadata.RefBlob}}}
		if err := s.LinkBlob(ctx, "r", repo, digest.FromString("layer"), 5); err != nil {
			t.Fatal(err)
		}
		if err := s.PutManifest(ctx, m, tags...); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond) // distinct times
		return m.Digest
	}
	// Tag names in the reverse of their time order, so name and time
	// orders differ.
	d3 := put("app", "three", "c")
	d2 := put("app", "two", "b")
	d1 := put("app", "one", "a", "a2")
	put("other", "one", "a")
	pulled := time.Now().Add(time.Hour).Truncate(time.Microsecond).UTC()
	if err := s.RecordPulls(ctx, []metadata.Pull{{Registry: "r", Repo: "app", Kind: metadata.PullTag, Ref: "b", At: pulled},
		{Registry: "r", Repo: "app", Kind: metadata.PullManifest, Ref: d2.String(), At: pulled}}); err != nil {
		t.Fatal(err)
	}
	info, err := s.RepositoryInfo(ctx, "r", "app")
	if err != nil || info.Manifests != 3 || info.Tags != 4 || !info.PulledAt.Equal(pulled) || info.CreatedAt.IsZero() || info.UpdatedAt.Before(info.CreatedAt) {
		t.Fatalf("info: %+v %v", info, err)
	}
	tagNames := func(q metadata.InfoQuery) ([]string, bool) {
		t.Helper()
		list, more, err := s.ListTagInfo(ctx, "r", "app", q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range list {
			out = append(out, x.Name)
		}
		return out, more
	}
	for _, c := range []struct {
		q    metadata.InfoQuery
		want []string
		more bool
	}{
		{metadata.InfoQuery{}, []string{"a", "a2", "b", "c"}, false},
		{metadata.InfoQuery{N: 2}, []string{"a", "a2"}, true},
		{metadata.InfoQuery{N: 2, Last: "a2"}, []string{"b", "c"}, false},
		{metadata.InfoQuery{Order: metadata.OrderTimeAsc, N: 2}, []string{"c", "b"}, true},
		{metadata.InfoQuery{Order: metadata.OrderTimeAsc, Last: "b"}, []string{"a", "a2"}, false},
		{metadata.InfoQuery{Order: metadata.OrderTimeDesc, N: 2}, []string{"a2", "a"}, true},
		{metadata.InfoQuery{Order: metadata.OrderTimeDesc, Last: "a", N: 5}, []string{"b", "c"}, false},
	} {
		if got, more := tagNames(c.q); !slices.Equal(got, c.want) || more != c.more {
			t.Errorf("tags %+v: %v more=%v, want %v more=%v", c.q, got, more, c.want, c.more)
		}
	}
	tags, _, _ := s.ListTagInfo(ctx, "r", "app", metadata.InfoQuery{Last: "a2", N: 1})
	if len(tags) != 1 || tags[0].Digest != d2 || !tags[0].PulledAt.Equal(pulled) || tags[0].UpdatedAt.IsZero() {
		t.Fatalf("tag b: %+v", tags)
	}
	if _, _, err := s.ListTagInfo(ctx, "r", "app", metadata.InfoQuery{Order: "sideways"}); err == nil {
		t.Fatal("unknown order accepted")
	}
	ms, more, err := s.ListManifestInfo(ctx, "r", "app", metadata.InfoQuery{Order: metadata.OrderTimeDesc})
	if err != nil || more || len(ms) != 3 || ms[0].Digest != d1 || ms[1].Digest != d2 || ms[2].Digest != d3 {
		t.Fatalf("manifests by time: %+v %v %v", ms, more, err)
	}
	if !slices.Equal(ms[0].Tags, []string{"a", "a2"}) || ms[0].Size != 3 || ms[0].MediaType != "mt" || !ms[1].PulledAt.Equal(pulled) || !ms[0].PulledAt.IsZero() {
		t.Fatalf("manifest details: %+v", ms)
	}
	if ms, more, _ := s.ListManifestInfo(ctx, "r", "app", metadata.InfoQuery{Order: metadata.OrderTimeAsc, Last: d3.String(), N: 1}); len(ms) != 1 || ms[0].Digest != d2 || !more {
		t.Fatalf("manifests after d3: %+v %v", ms, more)
	}

	dm, dt, err := s.DeleteRepository(ctx, "r", "app")
	if err != nil || len(dm) != 3 || !slices.Equal(dt, []string{"a", "a2", "b", "c"}) {
		t.Fatalf("delete: %v %v %v", dm, dt, err)
	}
	if ok, _ := s.RepositoryExists(ctx, "r", "app"); ok {
		t.Fatal("deleted repository exists")
	}
	if _, err := s.GetTag(ctx, "r", "app", "a"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("tag of deleted repository: %v", err)
	}
	if _, err := s.BlobSize(ctx, "r", "app", digest.FromString("layer")); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("blob link of deleted repository: %v", err)
	}
	if _, _, err := s.DeleteRepository(ctx, "r", "app"); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
	if info, err := s.RepositoryInfo(ctx, "r", "other"); err != nil || info.Manifests != 1 || info.Tags != 1 {
		t.Fatalf("other repository: %+v %v", info, err)
	}
}

// A manifest's attributes (the whole platform, variant and os.version
// included, its own and an index's children's) are kept as stored and
// shown by ManifestInfo and ListManifestInfo; SetManifestAttrs describes a row later. A
// manifest is signed when a signature refers to it, or when cosign's
// legacy tag names a signature; other referrers, a signature in another
// repository and a .sig tag on a non-signature do not sign it.
func testManifestAttrs(t *testing.T, open Opener) {
	ctx := context.Background()
	s := open(t)
	put := func(repo, name string, subject digest.Digest, a metadata.ManifestAttrs, tags ...string) digest.Digest {
		t.Helper()
		m := metadata.Manifest{Registry: "r", Repo: repo, Digest: digest.FromString(name), MediaType: "mt", Size: 10, Subject: subject, Attrs: a}
		if err := s.PutManifest(ctx, m, tags...); err != nil {
			t.Fatal(err)
		}
		return m.Digest
	}
	img := metadata.ManifestAttrs{ConfigMediaType: "cfg", Architecture: "arm", OS: "linux", Variant: "v7", ImageSize: 1234, Described: true}
	index := metadata.ManifestAttrs{ImageSize: 10, Described: true, References: []metadata.PlatformRef{
		{Digest: digest.FromString("c1"), Architecture: "amd64", OS: "linux"},
		{Digest: digest.FromString("c2"), Architecture: "arm", OS: "linux", Variant: "v6"},
		{Digest: digest.FromString("c3"), Architecture: "amd64", OS: "windows", OSVersion: "10.0.17763.5830"},
	}}
	sig := metadata.ManifestAttrs{Signature: true, Described: true}
	signedImg := put("app", "img", "", img, "v1")
	idx := put("app", "index", "", index, "multi")
	put("app", "sig", signedImg, sig)
	put("app", "sbom", idx, metadata.ManifestAttrs{Described: true})
	put("other", "sig", idx, sig)
	legacy := put("app", "legacy", "", metadata.ManifestAttrs{})
	put("app", "legacysig", "", sig, strings.ReplaceAll(legacy.String(), ":", "-")+".sig")
	notSig := put("app", "notsig", "", metadata.ManifestAttrs{Described: true})
	put("app", "notsigtag", "", metadata.ManifestAttrs{Described: true}, strings.ReplaceAll(notSig.String(), ":", "-")+".sig")

	get := func(d digest.Digest) metadata.ManifestInfo {
		t.Helper()
		m, err := s.ManifestInfo(ctx, "r", "app", d)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	if m := get(signedImg); !reflect.DeepEqual(m.Attrs, img) || !m.Signed || !slices.Equal(m.Tags, []string{"v1"}) || m.Size != 10 || m.CreatedAt.IsZero() {
		t.Fatalf("image: %+v", m)
	}
	if m := get(idx); !reflect.DeepEqual(m.Attrs, index) || m.Signed {
		t.Fatalf("index (an sbom refers to it, a signature in another repository): %+v", m)
	}
	if m := get(legacy); !m.Signed || m.Attrs.Described {
		t.Fatalf("legacy cosign signed, not described: %+v", m)
	}
	if m := get(notSig); m.Signed {
		t.Fatalf("a .sig tag on a non-signature signs: %+v", m)
	}
	if _, err := s.ManifestInfo(ctx, "r", "app", digest.FromString("none")); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("unknown manifest: %v", err)
	}
	list, _, err := s.ListManifestInfo(ctx, "r", "app", metadata.InfoQuery{})
	if err != nil {
		t.Fatal(err)
	}
	signed := map[digest.Digest]bool{}
	for _, m := range list {
		signed[m.Digest] = m.Signed
		if want := map[digest.Digest]metadata.ManifestAttrs{signedImg: img, idx: index}[m.Digest]; want.Described && !reflect.DeepEqual(m.Attrs, want) {
			t.Errorf("listed %s: %+v, want %+v", m.Digest, m.Attrs, want)
		}
	}
	if len(list) != 8 || !signed[signedImg] || !signed[legacy] || signed[idx] || signed[notSig] {
		t.Fatalf("listing signed: %v", signed)
	}
	tags, _, err := s.ListTagInfo(ctx, "r", "app", metadata.InfoQuery{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range tags {
		if want := tg.Name == "v1"; tg.Signed != want {
			t.Errorf("tag %s signed=%v, want %v", tg.Name, tg.Signed, want)
		}
	}

	described := metadata.ManifestAttrs{ConfigMediaType: "cfg", Architecture: "amd64", OS: "windows", OSVersion: "10.0.20348.2340", ImageSize: 99, Described: true}
	if err := s.SetManifestAttrs(ctx, "r", "app", legacy, described); err != nil {
		t.Fatal(err)
	}
	if m := get(legacy); !reflect.DeepEqual(m.Attrs, described) || !m.Signed {
		t.Fatalf("described later: %+v", m)
	}
	if err := s.SetManifestAttrs(ctx, "r", "nope", legacy, described); !errors.Is(err, metadata.ErrNotFound) {
		t.Fatalf("set attributes of an unknown manifest: %v", err)
	}
	// Storing the same manifest again keeps what was recorded.
	if err := s.PutManifest(ctx, metadata.Manifest{Registry: "r", Repo: "app", Digest: legacy, MediaType: "mt", Size: 10}, "again"); err != nil {
		t.Fatal(err)
	}
	if m := get(legacy); !reflect.DeepEqual(m.Attrs, described) {
		t.Fatalf("re-put overwrote attributes: %+v", m)
	}
}
