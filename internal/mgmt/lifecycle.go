package mgmt

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/lifecycle"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// Lifecycle serves usage against the quotas and on-demand purges of
// cached content.
type Lifecycle interface {
	Usages(ctx context.Context, registry string) ([]lifecycle.Usage, error)
	Purge(ctx context.Context, registry, rule string, olderThan time.Duration, dryRun bool) (lifecycle.Result, error)
}

func (h *Handler) lifecycle() (Lifecycle, error) {
	if h.opts.Lifecycle == nil {
		return nil, &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "This server does not track storage usage."}
	}
	return h.opts.Lifecycle, nil
}

// listUsages is GET registries/R/listUsages (az acr show-usage).
func (h *Handler) listUsages(w http.ResponseWriter, req *request) error {
	lc, err := h.lifecycle()
	if err != nil {
		return err
	}
	us, err := lc.Usages(req.r.Context(), req.registry)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": us})
	return nil
}

type purgedItemJSON struct {
	Repository string `json:"repository"`
	Kind       string `json:"kind"`
	Digest     string `json:"digest"`
	Bytes      int64  `json:"bytes"`
	LastPulled string `json:"lastPulled"`
}

// purge is POST registries/R/cacheRules/RULE/purge, an arca action:
// evict the rule's cached content not pulled for olderThanSeconds (0 or
// absent: all of it), or with dryRun say what would go.
func (h *Handler) purge(w http.ResponseWriter, req *request) error {
	if err := rules.ValidateName("cache rule", req.name); err != nil {
		return err
	}
	lc, err := h.lifecycle()
	if err != nil {
		return err
	}
	r, err := h.opts.Store.GetCacheRule(req.r.Context(), req.registry, req.name)
	if errors.Is(err, metadata.ErrNotFound) {
		return errCacheRuleNotFound(req.name)
	}
	if err != nil {
		return err
	}
	var body struct {
		OlderThanSeconds int64 `json:"olderThanSeconds"`
		DryRun           bool  `json:"dryRun"`
	}
	if req.r.ContentLength != 0 {
		if err := readBody(req.r, &body); err != nil {
			return err
		}
	}
	if body.OlderThanSeconds < 0 || body.OlderThanSeconds > int64(100*365*24*time.Hour/time.Second) {
		return errBadRequest("InvalidRequestContent", "olderThanSeconds must be 0 (everything) or a positive number of seconds up to 100 years.")
	}
	res, err := lc.Purge(req.r.Context(), req.registry, r.Name, time.Duration(body.OlderThanSeconds)*time.Second, body.DryRun)
	if err != nil {
		return err
	}
	items := make([]purgedItemJSON, 0, len(res.Items))
	for _, it := range res.Items {
		items = append(items, purgedItemJSON{Repository: it.Repo, Kind: it.Kind, Digest: it.Digest.String(), Bytes: it.Size, LastPulled: armtime.Format(it.LastUsed)})
	}
	if !res.DryRun {
		h.log.Info("cache rule purged", "registry", req.registry, "rule", r.Name, "manifests", res.Manifests, "blobs", res.Blobs, "bytes", res.Bytes)
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"dryRun": res.DryRun, "manifests": res.Manifests, "blobs": res.Blobs, "bytes": res.Bytes, "items": items, "moreItems": res.More,
	})
	return nil
}
