package mgmt

import (
	"context"
	"errors"
	"net/http"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// Syncer runs active sync on demand: the estimate behind `cache create
// --dry-run` and `cache sync --tag`. Results are written back as JSON.
type Syncer interface {
	Estimate(ctx context.Context, registry string, r rules.Rule) (any, error)
	SyncTag(ctx context.Context, registry, rule, tag string) (any, error)
	// Status is the last run of an ActiveSync rule: start, end, result,
	// tag counts, bytes fetched and the last error of each failing tag.
	Status(ctx context.Context, registry, rule string) (any, error)
}

// estimate is POST <registry>/checkCacheRuleArtifactSyncEstimate: the body
// is the CacheRule that would be created; nothing is stored.
func (h *Handler) estimate(w http.ResponseWriter, req *request) error {
	if h.opts.Syncer == nil {
		return errNoSyncer()
	}
	var body struct {
		cacheRuleBody
		Name string `json:"name"`
	}
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	r := rules.Rule{Name: body.Name}
	if err := h.applyCacheRule(&r, body.cacheRuleBody, req, false); err != nil {
		return err
	}
	if r.Name == "" {
		// The estimate endpoint's body names no rule (the path has none).
		r.Name = "dry-run"
	}
	res, err := h.opts.Syncer.Estimate(req.r.Context(), req.registry, r)
	if err != nil {
		return syncError(err)
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// syncNow is arca's POST <cacheRule>/sync {"tag": ...} (`cache sync`): it
// syncs one tag now and answers with what was fetched.
func (h *Handler) syncNow(w http.ResponseWriter, req *request) error {
	if err := rules.ValidateName("cache rule", req.name); err != nil {
		return err
	}
	if _, err := h.opts.Store.GetCacheRule(req.r.Context(), req.registry, req.name); err != nil {
		if errors.Is(err, metadata.ErrNotFound) {
			return errCacheRuleNotFound(req.name)
		}
		return err
	}
	if h.opts.Syncer == nil {
		return errNoSyncer()
	}
	var body struct {
		Tag   string `json:"tag"`
		Image string `json:"image"` // the extension's older name
	}
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	if body.Tag == "" {
		body.Tag = body.Image
	}
	if body.Tag == "" {
		return errBadRequest("InvalidRequestContent", "The property 'tag' is required: the tag to sync now.")
	}
	rep, err := h.opts.Syncer.SyncTag(req.r.Context(), req.registry, req.name, body.Tag)
	if err != nil {
		return syncError(err)
	}
	h.log.Info("tag synced on demand", "registry", req.registry, "rule", req.name, "tag", body.Tag)
	writeJSON(w, http.StatusOK, rep)
	return nil
}

func errNoSyncer() error {
	return &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "Active sync is not enabled on this arca server."}
}

// syncError maps the syncer's errors: rule errors (tag outside the filter,
// a passive rule) are the caller's; a missing tag is 404; anything else is
// the upstream failing, as the data plane's 424.
func syncError(err error) error {
	var re *rules.Error
	var ae *apiError
	switch {
	case errors.As(err, &re), errors.As(err, &ae):
		return err
	case errors.Is(err, metadata.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Code: "ResourceNotFound", Message: err.Error()}
	case errors.Is(err, context.Canceled):
		return err
	}
	return &apiError{Status: http.StatusFailedDependency, Code: "UpstreamRequestFailed", Message: err.Error()}
}
