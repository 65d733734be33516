package syncer

import (
	"testing"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/rules"
)

func TestPlatformFilter(t *testing.T) {
	f, err := compile(rules.Rule{Filters: rules.Filters{Platforms: []string{"linux/amd64", "Linux/ARM64", "linux/arm/v7"}}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		p    *oci.Platform
		want bool
	}{
		{&oci.Platform{OS: "linux", Architecture: "amd64"}, true},
		{&oci.Platform{OS: "linux", Architecture: "amd64", Variant: "v3"}, true}, // no variant in the filter: any
		{&oci.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, true},
		{&oci.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, true},
		{&oci.Platform{OS: "linux", Architecture: "arm"}, true}, // v7 is arm's default
		{&oci.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, false},
		{&oci.Platform{OS: "windows", Architecture: "amd64"}, false},
		{&oci.Platform{OS: "unknown", Architecture: "unknown"}, false}, // attestation manifests
		{nil, false},
	}
	for _, c := range cases {
		if got := f.platform(c.p); got != c.want {
			t.Errorf("platform %v: %v, want %v", c.p, got, c.want)
		}
	}
	if none, _ := compile(rules.Rule{}); !none.platform(nil) {
		t.Error("no platform filter must select everything")
	}
	if _, err := compile(rules.Rule{Filters: rules.Filters{Platforms: []string{"linux"}}}); err == nil {
		t.Error("a platform without architecture was accepted")
	}
}

func TestTagAndKindFilters(t *testing.T) {
	f, err := compile(rules.Rule{Filters: rules.Filters{
		Tags:       "Tags | where Name startswith 'v' and Name !contains 'rc'",
		ImageTypes: &rules.KindFilter{Type: "exclude", Values: []string{oci.MediaTypeDockerList}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for tag, want := range map[string]bool{
		"v1.2": true, "V2": true, "v1.3-rc1": false, "latest": false,
		// referrers tag schema: never a tag to sync
		"sha256-" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": false,
	} {
		if got := f.tag(tag); got != want {
			t.Errorf("tag %q: %v, want %v", tag, got, want)
		}
	}
	if f.imageType(oci.MediaTypeDockerList) || !f.imageType(oci.MediaTypeOCIIndex) || !f.imageType("") {
		t.Error("image type exclude filter")
	}
	if _, err := compile(rules.Rule{Filters: rules.Filters{Tags: "Tags | project Name"}}); err == nil {
		t.Error("a query outside the supported subset was accepted")
	}
	a := rules.Rule{Source: "quay.io/x", Target: "x", Filters: rules.Filters{Tags: "Tags"}}
	b := a
	b.CredentialSet = "creds"
	if contentHash(a) != contentHash(b) || runHash(a) == runHash(b) {
		t.Error("a credential change must rerun the rule without invalidating synced tags")
	}
	b.Filters.Platforms = []string{"linux/amd64"}
	if contentHash(a) == contentHash(b) {
		t.Error("a filter change must invalidate synced tags")
	}
}
