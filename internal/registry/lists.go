package registry

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/arcacache/arca/internal/cache"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/oci"
)

// maxPage bounds one page of tags or repositories.
const maxPage = 10000

var paginationInvalid = errcode.Code{Value: "PAGINATION_NUMBER_INVALID", Message: "invalid number of results requested", Status: http.StatusBadRequest}

// pageParams reads n and last. n absent means "everything" (up to maxPage).
func pageParams(r *http.Request) (n int, last string, err error) {
	q := r.URL.Query()
	last = q.Get("last")
	n = maxPage
	if s := q.Get("n"); s != "" {
		n, err = strconv.Atoi(s)
		if err != nil || n < 0 {
			return 0, "", errcode.New(paginationInvalid, fmt.Sprintf("n=%q must be a non-negative integer", s))
		}
		if n > maxPage {
			n = maxPage
		}
	}
	return n, last, nil
}

func writeJSON(w http.ResponseWriter, contentType string, v any) error {
	return writeJSONStatus(w, contentType, http.StatusOK, v)
}

func writeJSONStatus(w http.ResponseWriter, contentType string, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, err = w.Write(b)
	return err
}

func setNextLink(w http.ResponseWriter, path string, n int, last string) {
	q := url.Values{"n": {strconv.Itoa(n)}, "last": {last}}
	w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
}

// tags lists a repository's tags.
func (h *Handler) tags(w http.ResponseWriter, r *http.Request, reg, repo string) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	exists, err := h.meta.RepositoryExists(r.Context(), reg, repo)
	if err != nil {
		return err
	}
	if !exists {
		return errcode.New(errcode.NameUnknown, fmt.Sprintf("repository %s is not known", repo))
	}
	tags := []string{}
	more := false
	if n > 0 {
		if tags, more, err = h.meta.ListTags(r.Context(), reg, repo, last, n); err != nil {
			return err
		}
	}
	if more {
		setNextLink(w, "/v2/"+repo+"/tags/list", n, tags[len(tags)-1])
	}
	return writeJSON(w, "application/json", map[string]any{"name": repo, "tags": tags})
}

// cachedTags lists the tags of a repository served by a cache rule: the
// upstream's and ours (cache.Tags), paged here with n and last.
func (h *Handler) cachedTags(w http.ResponseWriter, r *http.Request, reg string, t cache.Target) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	all, status, err := h.cache.Tags(r.Context(), reg, t, last != "")
	if err != nil {
		return err
	}
	w.Header().Set("X-Arca-Cache", string(status))
	// all is sorted: the page starts after last.
	i, _ := slices.BinarySearch(all, last)
	if i < len(all) && all[i] == last {
		i++
	}
	rest := all[i:]
	page := rest[:min(n, len(rest))]
	if len(page) < len(rest) && n > 0 {
		setNextLink(w, "/v2/"+t.Repo+"/tags/list", n, page[len(page)-1])
	}
	return writeJSON(w, "application/json", map[string]any{"name": t.Repo, "tags": append([]string{}, page...)})
}

func (h *Handler) catalog(w http.ResponseWriter, r *http.Request, reg string) error {
	n, last, err := pageParams(r)
	if err != nil {
		return err
	}
	repos := []string{}
	more := false
	if n > 0 {
		if repos, more, err = h.listRepositories(r.Context(), reg, last, n); err != nil {
			return err
		}
	}
	if more {
		setNextLink(w, r.URL.Path, n, repos[len(repos)-1]) // /v2/_catalog or /acr/v1/_catalog
	}
	return writeJSON(w, "application/json", map[string]any{"repositories": repos})
}

// referrers answers with an image index of the manifests whose subject is
// the given digest; never 404 for "none", as the spec requires.
func (h *Handler) referrers(w http.ResponseWriter, r *http.Request, reg, repo, ref string) error {
	d, err := parseDigest(ref)
	if err != nil {
		return err
	}
	artifactType := r.URL.Query().Get("artifactType")
	idx, err := h.localReferrers(r, reg, repo, d, artifactType)
	if err != nil {
		return err
	}
	if artifactType != "" {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(w, oci.MediaTypeOCIIndex, idx)
}

func (h *Handler) localReferrers(r *http.Request, reg, repo string, d digest.Digest, artifactType string) (oci.Index, error) {
	list, err := h.meta.Referrers(r.Context(), reg, repo, d, artifactType)
	if err != nil {
		return oci.Index{}, err
	}
	idx := oci.Index{SchemaVersion: 2, MediaType: oci.MediaTypeOCIIndex, Manifests: []oci.Descriptor{}}
	for _, ref := range list {
		idx.Manifests = append(idx.Manifests, oci.Descriptor{
			MediaType: ref.MediaType, Digest: ref.Digest, Size: ref.Size,
			ArtifactType: ref.ArtifactType, Annotations: ref.Annotations,
		})
	}
	return idx, nil
}
