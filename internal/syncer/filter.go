package syncer

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strings"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/rules"
	"github.com/arcacache/arca/internal/syncer/artifactkind"
)

// filter is a rule's artifactSyncFilters, ready to match. How each filter
// matches (see also docs and package artifactkind):
//
//   - tags: the KQL query, all conditions ANDed (rules.ParseTagQuery).
//     Tags of the referrers tag schema ("sha256-<64 hex>") are never synced
//     as tags: they are how registries without the referrers API store
//     referrers, which sync fetches through the referrers path instead.
//   - platforms: applied to the entries of an index. "os/arch" matches any
//     variant; "os/arch/variant" matches that variant, or an entry without
//     one when it is the architecture's default (arm64 v8, arm v7). Entries
//     without a platform (attestation manifests) are skipped when the filter
//     is set. The index itself is stored exactly as served.
//   - imageTypes: manifest media types, matched exactly (ignoring case)
//     against the tagged manifest and each index entry synced.
//   - artifactTypes: aliases or media types (artifactkind), matched against
//     the tagged manifest and each referrer.
type filter struct {
	tags          *rules.TagFilter
	platforms     []platform
	imageTypes    *rules.KindFilter
	artifactTypes *rules.KindFilter
	referrers     bool
}

type platform struct{ os, arch, variant string }

func compile(r rules.Rule) (*filter, error) {
	f := &filter{imageTypes: r.Filters.ImageTypes, artifactTypes: r.Filters.ArtifactTypes,
		referrers: strings.EqualFold(r.SyncReferrers, "Enabled")}
	if r.Filters.Tags != "" {
		tf, err := rules.ParseTagQuery(r.Filters.Tags)
		if err != nil {
			return nil, err
		}
		f.tags = tf
	}
	for _, p := range r.Filters.Platforms {
		parts := strings.Split(strings.ToLower(strings.TrimSpace(p)), "/")
		if len(parts) < 2 || len(parts) > 3 {
			return nil, &rules.Error{Code: rules.CodeInvalidSync, Message: "artifactSyncFilters.platforms: " + p + " is not os/architecture[/variant]"}
		}
		pl := platform{os: parts[0], arch: parts[1]}
		if len(parts) == 3 {
			pl.variant = parts[2]
		}
		f.platforms = append(f.platforms, pl)
	}
	return f, nil
}

var referrersTagRe = regexp.MustCompile(`^[a-z0-9]+-[0-9a-f]{64}$`)

// tag reports whether a tag is to be synced.
func (f *filter) tag(tag string) bool {
	if referrersTagRe.MatchString(tag) {
		return false
	}
	return f.tags == nil || f.tags.Match(tag)
}

func (f *filter) imageType(mediaType string) bool {
	if f.imageTypes == nil || mediaType == "" {
		return true
	}
	in := false
	for _, v := range f.imageTypes.Values {
		if strings.EqualFold(strings.TrimSpace(v), mediaType) {
			in = true
			break
		}
	}
	return in == (f.imageTypes.Type == "include")
}

func (f *filter) artifact(a artifactkind.Artifact) bool {
	if f.artifactTypes == nil {
		return true
	}
	return a.MatchesAny(f.artifactTypes.Values) == (f.artifactTypes.Type == "include")
}

// keepTop decides on a tagged manifest from its body.
func (f *filter) keepTop(m *oci.Manifest) bool {
	return f.imageType(m.MediaType) && f.artifact(artifactkind.Of(m))
}

// keepArtifact decides on a referrer from its body.
func (f *filter) keepArtifact(m *oci.Manifest) bool { return f.artifact(artifactkind.Of(m)) }

func (f *filter) platform(p *oci.Platform) bool {
	if len(f.platforms) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	os, arch, variant := strings.ToLower(p.OS), strings.ToLower(p.Architecture), strings.ToLower(p.Variant)
	for _, w := range f.platforms {
		if w.os != os || w.arch != arch {
			continue
		}
		if w.variant == "" || w.variant == variant || (variant == "" && w.variant == defaultVariant(arch)) {
			return true
		}
	}
	return false
}

func defaultVariant(arch string) string {
	switch arch {
	case "arm64":
		return "v8"
	case "arm":
		return "v7"
	}
	return ""
}

// contentHash identifies what a rule selects and where it stores it: a tag
// recorded as done under another hash is walked again.
func contentHash(r rules.Rule) string {
	return hashJSON(struct {
		Source, Target, Referrers string
		Filters                   rules.Filters
	}{r.Source, r.Target, strings.ToLower(r.SyncReferrers), r.Filters})
}

// runHash identifies the whole sync configuration: a rule whose hash
// differs from its last run's is synced at once.
func runHash(r rules.Rule) string {
	return hashJSON(struct {
		Content, CredentialSet, Identity, Mode string
	}{contentHash(r), r.CredentialSet, r.Identity, string(r.Mode())})
}

func hashJSON(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}
