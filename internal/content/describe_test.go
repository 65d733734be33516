package content_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
)

type describeFixture struct {
	t     *testing.T
	ctx   context.Context
	store *content.Store
	meta  metadata.Store
}

func newDescribeFixture(t *testing.T) *describeFixture {
	b, err := blobstore.NewFS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	meta := newMeta(t)
	return &describeFixture{t: t, ctx: context.Background(), store: &content.Store{Blobs: b, Index: meta}, meta: meta}
}

// blob commits body and returns its descriptor.
func (f *describeFixture) blob(mediaType string, body []byte) oci.Descriptor {
	f.t.Helper()
	d := digest.FromBytes(body)
	w, err := f.store.NewWriter(f.ctx, d, int64(len(body)))
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := w.Write(body); err != nil {
		f.t.Fatal(err)
	}
	if err := f.store.CommitBlob(f.ctx, w, "r", "app", d, int64(len(body))); err != nil {
		f.t.Fatal(err)
	}
	return oci.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(body))}
}

// image is an image manifest whose config declares platform p; with
// storeConfig false the config blob is left out (as a pull-through stores
// the manifest first).
func (f *describeFixture) image(p oci.Platform, storeConfig bool) (digest.Digest, []byte) {
	f.t.Helper()
	cfg := mustMarshal(f.t, map[string]any{"architecture": p.Architecture, "os": p.OS, "variant": p.Variant, "os.version": p.OSVersion,
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{}}})
	cd := oci.Descriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	if storeConfig {
		cd = f.blob(cd.MediaType, cfg)
	}
	body := mustMarshal(f.t, map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeOCIManifest, "config": cd, "layers": []any{}})
	return digest.FromBytes(body), body
}

// put stores manifest body as PutManifest does and returns what the store
// recorded.
func (f *describeFixture) put(mediaType string, body []byte) metadata.ManifestInfo {
	f.t.Helper()
	parsed, err := oci.ParseManifest(mediaType, body)
	if err != nil {
		f.t.Fatal(err)
	}
	d := digest.FromBytes(body)
	if _, err := f.store.PutManifest(f.ctx, "r", "app", d, body, parsed); err != nil {
		f.t.Fatal(err)
	}
	return f.info(d)
}

func (f *describeFixture) info(d digest.Digest) metadata.ManifestInfo {
	f.t.Helper()
	m, err := f.meta.ManifestInfo(f.ctx, "r", "app", d)
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An image's platform is recorded whole from its config (variant,
// os.version), and an index's children with the platforms it declares for
// them.
func TestDescribeRecordsVariant(t *testing.T) {
	f := newDescribeFixture(t)
	for _, p := range []oci.Platform{
		{OS: "linux", Architecture: "arm", Variant: "v7"},
		{OS: "linux", Architecture: "arm64", Variant: "v8"},
		{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2340"},
		{OS: "linux", Architecture: "amd64"},
	} {
		_, body := f.image(p, true)
		a := f.put(oci.MediaTypeOCIManifest, body).Attrs
		if !a.Described || a.OS != p.OS || a.Architecture != p.Architecture || a.Variant != p.Variant || a.OSVersion != p.OSVersion {
			t.Errorf("image %s: recorded %+v", p.String(), a)
		}
	}

	v6, _ := f.image(oci.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, false)
	v7, _ := f.image(oci.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, false)
	win, _ := f.image(oci.Platform{OS: "windows", Architecture: "amd64"}, false)
	index := mustMarshal(t, map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeOCIIndex, "manifests": []map[string]any{
		{"mediaType": oci.MediaTypeOCIManifest, "digest": v6, "size": 1, "platform": map[string]any{"os": "linux", "architecture": "arm", "variant": "v6"}},
		{"mediaType": oci.MediaTypeOCIManifest, "digest": v7, "size": 1, "platform": map[string]any{"os": "linux", "architecture": "arm", "variant": "v7"}},
		{"mediaType": oci.MediaTypeOCIManifest, "digest": win, "size": 1, "platform": map[string]any{"os": "windows", "architecture": "amd64", "os.version": "10.0.17763.5830"}},
	}})
	want := []metadata.PlatformRef{
		{Digest: v6, OS: "linux", Architecture: "arm", Variant: "v6"},
		{Digest: v7, OS: "linux", Architecture: "arm", Variant: "v7"},
		{Digest: win, OS: "windows", Architecture: "amd64", OSVersion: "10.0.17763.5830"},
	}
	if m := f.put(oci.MediaTypeOCIIndex, index); !m.Attrs.Described || !reflect.DeepEqual(m.Attrs.References, want) {
		t.Errorf("index references %+v, want %+v", m.Attrs.References, want)
	}
}

// A row described before variants were recorded (the migration marks it
// undescribed, keeping its attributes) is described again, once, when
// listed; if its config is not local, it keeps the platform it recorded.
func TestDescribeListedRedescribesRecordedPlatform(t *testing.T) {
	f := newDescribeFixture(t)
	for _, c := range []struct {
		name        string
		platform    oci.Platform // in the config
		storeConfig bool
		shown       string // platform after DescribeListed
		recorded    bool   // recorded described, with the variant
	}{
		{"config stored", oci.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, true, "linux/arm/v7", true},
		{"config gone", oci.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, false, "linux/arm", false},
	} {
		d, body := f.image(c.platform, c.storeConfig)
		old := f.put(oci.MediaTypeOCIManifest, body).Attrs
		// As recorded before the migration, then marked by it.
		old.Architecture, old.OS, old.Variant, old.OSVersion, old.Described = "arm", "linux", "", "", false
		if err := f.meta.SetManifestAttrs(f.ctx, "r", "app", d, old); err != nil {
			t.Fatal(err)
		}
		m := f.info(d)
		if err := f.store.DescribeListed(f.ctx, f.meta, "r", "app", &m); err != nil {
			t.Fatal(err)
		}
		p := oci.Platform{OS: m.Attrs.OS, Architecture: m.Attrs.Architecture, Variant: m.Attrs.Variant}
		if p.String() != c.shown {
			t.Errorf("%s: listed platform %s, want %s", c.name, p.String(), c.shown)
		}
		if got := f.info(d).Attrs; got.Described != c.recorded || (c.recorded && got.Variant != c.platform.Variant) {
			t.Errorf("%s: recorded after listing %+v, want described=%v", c.name, got, c.recorded)
		}
	}
}
