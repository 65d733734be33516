package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
)

// ACR's repository API, /acr/v1/ (what `az acr repository` and `arca
// repository` call): repository, tag and manifest attributes, untag and
// repository deletion. It reads and changes this registry's own metadata
// only: a cache rule's repository shows what is cached (never the
// upstream), and deleting it only drops the cached copy.

// RepoDetails reads and deletes repositories for /acr/v1/.
type RepoDetails interface {
	RepositoryInfo(ctx context.Context, registry, repo string) (metadata.RepoInfo, error)
	ListTagInfo(ctx context.Context, registry, repo string, q metadata.InfoQuery) ([]metadata.TagInfo, bool, error)
	ListManifestInfo(ctx context.Context, registry, repo string, q metadata.InfoQuery) ([]metadata.ManifestInfo, bool, error)
	ManifestInfo(ctx context.Context, registry, repo string, d digest.Digest) (metadata.ManifestInfo, error)
	SetManifestAttrs(ctx context.Context, registry, repo string, d digest.Digest, a metadata.ManifestAttrs) error
	DeleteRepository(ctx context.Context, registry, repo string) ([]digest.Digest, []string, error)
}

// ACR route kinds.
const (
	kindACRCatalog   = "acr_catalog"
	kindACRRepo      = "acr_repository"
	kindACRTags      = "acr_tags"
	kindACRTag       = "acr_tag"
	kindACRManifests = "acr_manifests"
	kindACRManifest  = "acr_manifest"
)

const acrPrefix = "/acr/v1/"

// parseACRRoute parses the part of an /acr/v1/ path after the prefix, its
// elements already unescaped. Repository name components start with a
// letter or digit, so "_tags" and "_manifests" cannot be part of a name.
func parseACRRoute(el []string) route {
	n := len(el)
	switch {
	case n == 1 && el[0] == "_catalog":
		return route{kind: kindACRCatalog}
	case n >= 2 && el[n-1] == "_tags":
		return route{kind: kindACRTags, repo: strings.Join(el[:n-1], "/")}
	case n >= 3 && el[n-2] == "_tags" && el[n-1] != "":
		return route{kind: kindACRTag, repo: strings.Join(el[:n-2], "/"), ref: el[n-1]}
	case n >= 2 && el[n-1] == "_manifests":
		return route{kind: kindACRManifests, repo: strings.Join(el[:n-1], "/")}
	case n >= 3 && el[n-2] == "_manifests" && el[n-1] != "":
		return route{kind: kindACRManifest, repo: strings.Join(el[:n-2], "/"), ref: el[n-1]}
	case n >= 1 && el[n-1] != "" && !strings.HasPrefix(el[n-1], "_"):
		return route{kind: kindACRRepo, repo: strings.Join(el, "/")}
	}
	return route{kind: kindUnknown}
}

func isACR(kind string) bool { return strings.HasPrefix(kind, "acr_") }

// changeableAttributes are ACR's per-item locks; arca has none, so every
// operation is enabled.
type changeableAttributes struct {
	DeleteEnabled bool `json:"deleteEnabled"`
	WriteEnabled  bool `json:"writeEnabled"`
	ReadEnabled   bool `json:"readEnabled"`
	ListEnabled   bool `json:"listEnabled"`
}

var unlocked = changeableAttributes{true, true, true, true}

// acrTime formats a time as ACR does (RFC 3339, UTC); "" for none, which
// omitempty leaves out.
func acrTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

type acrRepository struct {
	Registry       string               `json:"registry"`
	ImageName      string               `json:"imageName"`
	CreatedTime    string               `json:"createdTime"`
	LastUpdateTime string               `json:"lastUpdateTime"`
	LastPulledTime string               `json:"lastPulledTime,omitempty"` // arca extension
	ManifestCount  int64                `json:"manifestCount"`
	TagCount       int64                `json:"tagCount"`
	Changeable     changeableAttributes `json:"changeableAttributes"`
}

type acrTag struct {
	Name           string               `json:"name"`
	Digest         string               `json:"digest"`
	CreatedTime    string               `json:"createdTime"`
	LastUpdateTime string               `json:"lastUpdateTime"`
	LastPulledTime string               `json:"lastPulledTime,omitempty"` // arca extension
	Signed         bool                 `json:"signed"`
	Changeable     changeableAttributes `json:"changeableAttributes"`
}

type acrManifest struct {
	Digest          string               `json:"digest"`
	ImageSize       int64                `json:"imageSize"`
	CreatedTime     string               `json:"createdTime"`
	LastUpdateTime  string               `json:"lastUpdateTime"`
	LastPulledTime  string               `json:"lastPulledTime,omitempty"` // arca extension
	Architecture    string               `json:"architecture,omitempty"`
	OS              string               `json:"os,omitempty"`
	Variant         string               `json:"variant,omitempty"`    // arca extension, OCI's name
	OSVersion       string               `json:"os.version,omitempty"` // arca extension, OCI's name
	References      []acrReference       `json:"references,omitempty"`
	MediaType       string               `json:"mediaType"`
	ConfigMediaType string               `json:"configMediaType,omitempty"`
	Tags            []string             `json:"tags,omitempty"`
	Signed          bool                 `json:"signed"` // arca extension (ACR has it on tags)
	Changeable      changeableAttributes `json:"changeableAttributes"`
}

// acrReference is a child of an index with its platform. ACR has no
// variant or os.version; arca adds them under OCI's names, so that a
// reference reads as an OCI platform.
type acrReference struct {
	Digest       string `json:"digest"`
	Architecture string `json:"architecture,omitempty"`
	OS           string `json:"os,omitempty"`
	Variant      string `json:"variant,omitempty"`
	OSVersion    string `json:"os.version,omitempty"`
}

func manifestOf(m metadata.ManifestInfo) acrManifest {
	// Manifests are immutable: stored once, never updated.
	at := acrTime(m.CreatedAt)
	out := acrManifest{Digest: m.Digest.String(), ImageSize: m.Attrs.ImageSize, CreatedTime: at, LastUpdateTime: at,
		LastPulledTime: acrTime(m.PulledAt), Architecture: m.Attrs.Architecture, OS: m.Attrs.OS,
		Variant: m.Attrs.Variant, OSVersion: m.Attrs.OSVersion, MediaType: m.MediaType,
		ConfigMediaType: m.Attrs.ConfigMediaType, Tags: m.Tags, Signed: m.Signed, Changeable: unlocked}
	if out.ImageSize == 0 {
		out.ImageSize = m.Size // not described (its bytes are gone)
	}
	for _, r := range m.Attrs.References {
		out.References = append(out.References, acrReference{Digest: r.Digest.String(), Architecture: r.Architecture, OS: r.OS,
			Variant: r.Variant, OSVersion: r.OSVersion})
	}
	return out
}

// describe fills in m's attributes if they were not recorded yet
// (content.Store.DescribeListed).
func (h *Handler) describe(ctx context.Context, d RepoDetails, reg, repo string, m *metadata.ManifestInfo) {
	if err := h.content.DescribeListed(ctx, d, reg, repo, m); err != nil {
		h.log.Warn("describe manifest", "registry", reg, "repo", repo, "digest", m.Digest, "err", err)
	}
}

func tagOf(t metadata.TagInfo) acrTag {
	// arca keeps when a tag was last set, not when it was first: both
	// times are that one.
	at := acrTime(t.UpdatedAt)
	return acrTag{Name: t.Name, Digest: t.Digest.String(), CreatedTime: at, LastUpdateTime: at,
		LastPulledTime: acrTime(t.PulledAt), Signed: t.Signed, Changeable: unlocked}
}

func (h *Handler) details() (RepoDetails, error) {
	d, ok := h.meta.(RepoDetails)
	if !ok {
		return nil, errcode.New(errcode.Unsupported, "the metadata store cannot list repository details")
	}
	return d, nil
}

// serveACR answers an authorized /acr/v1/ request.
func (h *Handler) serveACR(w http.ResponseWriter, r *http.Request, reg string, rt route) error {
	if rt.kind == kindACRCatalog {
		return h.catalog(w, r, reg)
	}
	d, err := h.details()
	if err != nil {
		return err
	}
	ctx := r.Context()
	notFound := func(err error) error {
		if errors.Is(err, metadata.ErrNotFound) {
			return errcode.New(errcode.NameUnknown, fmt.Sprintf("repository %s is not known", rt.repo))
		}
		return err
	}
	switch {
	case rt.kind == kindACRRepo && r.Method == http.MethodGet:
		info, err := d.RepositoryInfo(ctx, reg, rt.repo)
		if err != nil {
			return notFound(err)
		}
		return writeJSON(w, "application/json", acrRepository{Registry: r.Host, ImageName: rt.repo,
			CreatedTime: acrTime(info.CreatedAt), LastUpdateTime: acrTime(info.UpdatedAt), LastPulledTime: acrTime(info.PulledAt),
			ManifestCount: info.Manifests, TagCount: info.Tags, Changeable: unlocked})
	case rt.kind == kindACRRepo && r.Method == http.MethodDelete:
		ms, tags, err := d.DeleteRepository(ctx, reg, rt.repo)
		if err != nil {
			return notFound(err)
		}
		h.log.Info("repository deleted", "registry", reg, "repo", rt.repo, "manifests", len(ms), "tags", len(tags))
		deleted := make([]string, len(ms))
		for i, m := range ms {
			deleted[i] = m.String()
		}
		return writeJSONStatus(w, "application/json", http.StatusAccepted, map[string]any{"manifestsDeleted": deleted, "tagsDeleted": tags})
	case rt.kind == kindACRTag && r.Method == http.MethodGet:
		t, err := h.meta.GetTag(ctx, reg, rt.repo, rt.ref)
		if errors.Is(err, metadata.ErrNotFound) {
			return errcode.New(errcode.ManifestUnknown, fmt.Sprintf("tag %s of %s is not known", rt.ref, rt.repo))
		}
		if err != nil {
			return err
		}
		m, err := d.ManifestInfo(ctx, reg, rt.repo, t.Digest)
		if err != nil && !errors.Is(err, metadata.ErrNotFound) {
			return err
		}
		tag := tagOf(metadata.TagInfo{Name: rt.ref, Digest: t.Digest, UpdatedAt: t.UpdatedAt, PulledAt: t.PulledAt, Signed: m.Signed})
		return writeJSON(w, "application/json", map[string]any{"registry": r.Host, "imageName": rt.repo, "tag": tag})
	case rt.kind == kindACRTag && r.Method == http.MethodDelete:
		if err := h.meta.DeleteTag(ctx, reg, rt.repo, rt.ref); err != nil {
			if errors.Is(err, metadata.ErrNotFound) {
				return errcode.New(errcode.ManifestUnknown, fmt.Sprintf("tag %s of %s is not known", rt.ref, rt.repo))
			}
			return err
		}
		w.WriteHeader(http.StatusAccepted)
		return nil
	case rt.kind == kindACRManifest:
		dg, err := digest.Parse(rt.ref)
		if err != nil {
			return errcode.New(errcode.DigestInvalid, fmt.Sprintf("%q is not a digest", rt.ref))
		}
		m, err := d.ManifestInfo(ctx, reg, rt.repo, dg)
		if errors.Is(err, metadata.ErrNotFound) {
			return errcode.New(errcode.ManifestUnknown, fmt.Sprintf("manifest %s of %s is not known", dg, rt.repo))
		}
		if err != nil {
			return err
		}
		h.describe(ctx, d, reg, rt.repo, &m)
		return writeJSON(w, "application/json", map[string]any{"registry": r.Host, "imageName": rt.repo, "manifest": manifestOf(m)})
	case rt.kind == kindACRTags:
		q, err := infoQuery(r)
		if err != nil {
			return err
		}
		if _, err := d.RepositoryInfo(ctx, reg, rt.repo); err != nil {
			return notFound(err)
		}
		list, more, err := d.ListTagInfo(ctx, reg, rt.repo, q)
		if err != nil {
			return err
		}
		out := make([]acrTag, len(list))
		for i, t := range list {
			out[i] = tagOf(t)
		}
		if more {
			setACRNext(w, r, list[len(list)-1].Name)
		}
		return writeJSON(w, "application/json", map[string]any{"registry": r.Host, "imageName": rt.repo, "tags": out})
	case rt.kind == kindACRManifests:
		q, err := infoQuery(r)
		if err != nil {
			return err
		}
		if _, err := d.RepositoryInfo(ctx, reg, rt.repo); err != nil {
			return notFound(err)
		}
		list, more, err := d.ListManifestInfo(ctx, reg, rt.repo, q)
		if err != nil {
			return err
		}
		out := make([]acrManifest, len(list))
		for i := range list {
			h.describe(ctx, d, reg, rt.repo, &list[i])
			out[i] = manifestOf(list[i])
		}
		if more {
			setACRNext(w, r, list[len(list)-1].Digest.String())
		}
		return writeJSON(w, "application/json", map[string]any{"registry": r.Host, "imageName": rt.repo, "manifests": out})
	}
	return errcode.New(errcode.Unsupported, r.Method+" is not supported on this endpoint")
}

// acrDefaultPage is ACR's page size of tag and manifest listings.
const acrDefaultPage = 100

// infoQuery reads n, last and orderby (ACR's timedesc/timeasc; the CLI's
// time_desc/time_asc are accepted too).
func infoQuery(r *http.Request) (metadata.InfoQuery, error) {
	q := r.URL.Query()
	iq := metadata.InfoQuery{Last: q.Get("last"), N: acrDefaultPage}
	if s := q.Get("n"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return iq, errcode.New(paginationInvalid, fmt.Sprintf("n=%q must be a positive integer", s))
		}
		iq.N = min(n, maxPage)
	}
	switch o := strings.ToLower(q.Get("orderby")); o {
	case "":
	case "timedesc", metadata.OrderTimeDesc:
		iq.Order = metadata.OrderTimeDesc
	case "timeasc", metadata.OrderTimeAsc:
		iq.Order = metadata.OrderTimeAsc
	default:
		return iq, errcode.New(errcode.Unsupported, fmt.Sprintf("orderby=%q: want timedesc or timeasc", o)).WithStatus(http.StatusBadRequest)
	}
	return iq, nil
}

// setACRNext links the next page, keeping n and orderby.
func setACRNext(w http.ResponseWriter, r *http.Request, last string) {
	q := r.URL.Query()
	q.Set("last", last)
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.EscapedPath(), q.Encode()))
}
