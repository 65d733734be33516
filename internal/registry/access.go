package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/auth"
	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/oci"
)

// Access decides who may do what; it writes the refusal itself (401 with
// a token challenge, 403, 429).
type Access interface {
	Authorize(w http.ResponseWriter, r *http.Request, registry string, need []auth.Scope) (*auth.Grant, bool)
}

// need is what a route asks of the caller. It is decided before anything
// is read or fetched, so an unauthorized pull never reaches an upstream.
func need(rt route, r *http.Request) []auth.Scope {
	switch rt.kind {
	case kindBase:
		return nil
	case kindCatalog:
		return []auth.Scope{auth.CatalogScope}
	case kindManifest, kindBlob:
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			return []auth.Scope{auth.RepoScope(rt.repo, auth.Pull)}
		case http.MethodDelete:
			return []auth.Scope{auth.RepoScope(rt.repo, auth.Delete)}
		}
		return []auth.Scope{auth.RepoScope(rt.repo, auth.Pull, auth.Push)}
	case kindTags, kindReferrers:
		return []auth.Scope{auth.RepoScope(rt.repo, auth.Pull)}
	case kindUploads:
		s := []auth.Scope{auth.RepoScope(rt.repo, auth.Pull, auth.Push)}
		// A cross-repository mount reads the source repository.
		if from := r.URL.Query().Get("from"); r.URL.Query().Get("mount") != "" && from != "" && from != rt.repo && oci.ValidRepository(from) {
			s = append(s, auth.RepoScope(from, auth.Pull))
		}
		return s
	case kindUpload:
		return []auth.Scope{auth.RepoScope(rt.repo, auth.Pull, auth.Push)}
	case kindACRCatalog:
		return []auth.Scope{auth.CatalogScope}
	case kindACRRepo, kindACRTag, kindACRTags, kindACRManifests, kindACRManifest:
		if r.Method == http.MethodDelete {
			return []auth.Scope{auth.RepoScope(rt.repo, auth.Delete)}
		}
		return []auth.Scope{auth.RepoScope(rt.repo, auth.MetadataRead)}
	}
	// Unknown kinds are answered before access is checked; were one to
	// get here, it would need what no caller holds.
	return []auth.Scope{{Type: "repository", Name: "", Actions: []string{"none"}}}
}

type grantKey struct{}

// authorize runs the access check; without an Access everything is allowed.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, reg string, rt route) (*http.Request, bool) {
	if h.access == nil {
		return r, true
	}
	g, ok := h.access.Authorize(w, r, reg, need(rt, r))
	if !ok {
		return r, false
	}
	if rt.kind == kindCatalog || rt.kind == kindACRCatalog || rt.kind == kindUploads {
		r = r.WithContext(context.WithValue(r.Context(), grantKey{}, g))
	}
	return r, true
}

// StartedUploads tells when an upload session was started.
type StartedUploads interface {
	UploadStarted(ctx context.Context, registry, repo, id string) (time.Time, bool, error)
}

// uploadOpen reports whether upload session id of repo exists and is
// younger than the session lifetime (a session cannot be kept open
// forever by trickling chunks into it).
func (h *Handler) uploadOpen(r *http.Request, reg, repo, id string) (bool, error) {
	started, ok := h.meta.(StartedUploads)
	if h.sessionLifetime <= 0 || !ok {
		return h.meta.UploadExists(r.Context(), reg, repo, id)
	}
	at, exists, err := started.UploadStarted(r.Context(), reg, repo, id)
	if err != nil || !exists {
		return false, err
	}
	if time.Since(at) > h.sessionLifetime {
		return false, errcode.New(errcode.BlobUploadUnknown, fmt.Sprintf("upload %q expired: sessions last at most %s; start a new one", id, h.sessionLifetime))
	}
	return true, nil
}

// OwnedUploads records upload sessions with the identity that started
// them, refusing (metadata.ErrQuota) one over the identity's limit.
type OwnedUploads interface {
	CreateOwnedUpload(ctx context.Context, registry, repo, id, owner string, max int, maxAge time.Duration) error
}

// createUpload records a new upload session: counted against the caller's
// limit of open sessions when access control knows who it is.
func (h *Handler) createUpload(r *http.Request, reg, repo, id string) error {
	g, _ := r.Context().Value(grantKey{}).(*auth.Grant)
	owned, ok := h.meta.(OwnedUploads)
	if g == nil || !ok || h.maxUploads <= 0 || g.Identity().Kind == "" {
		return h.meta.CreateUpload(r.Context(), reg, repo, id)
	}
	id0 := g.Identity()
	err := owned.CreateOwnedUpload(r.Context(), reg, repo, id, reg+"/"+id0.Kind+"/"+strings.ToLower(id0.Name), h.maxUploads, h.uploadMaxAge)
	if errors.Is(err, metadata.ErrQuota) {
		return errcode.New(errcode.TooManyRequests, fmt.Sprintf("at most %d upload sessions may be open per identity; finish or cancel one first", h.maxUploads))
	}
	return err
}

// listRepositories is ListRepositories showing only what the caller may
// read: it pages on until n visible names are found.
func (h *Handler) listRepositories(ctx context.Context, reg, last string, n int) ([]string, bool, error) {
	g, _ := ctx.Value(grantKey{}).(*auth.Grant)
	if g == nil {
		return h.meta.ListRepositories(ctx, reg, last, n)
	}
	visible, err := g.RepoFilter(ctx)
	if err != nil {
		return nil, false, err
	}
	out := []string{}
	for {
		page, more, err := h.meta.ListRepositories(ctx, reg, last, n)
		if err != nil {
			return nil, false, err
		}
		for i, repo := range page {
			if !visible(repo) {
				continue
			}
			out = append(out, repo)
			if len(out) == n {
				return out, more || i < len(page)-1, nil
			}
		}
		if !more || len(page) == 0 {
			return out, false, nil
		}
		last = page[len(page)-1]
	}
}
