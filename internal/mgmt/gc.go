package mgmt

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/arcacache/arca/internal/gc"
	"github.com/arcacache/arca/internal/metadata"
)

// GarbageCollector runs garbage collection on demand.
type GarbageCollector interface {
	Run(ctx context.Context, req gc.Request) (gc.Result, error)
}

// RetentionStore keeps registries' retention policies for untagged
// manifests.
type RetentionStore interface {
	GetRetentionPolicy(ctx context.Context, registry string) (metadata.RetentionPolicy, error)
	PutRetentionPolicy(ctx context.Context, p metadata.RetentionPolicy) error
}

// retentionBody is properties.policies.retentionPolicy of a registry
// PATCH or PUT (az acr config retention update).
type retentionBody struct {
	Days   opt[int]    `json:"days"`
	Status opt[string] `json:"status"`
}

// maxRetentionDays is ACR's limit.
const maxRetentionDays = 365

// applyRetention validates and stores a retention policy change.
func (h *Handler) applyRetention(ctx context.Context, registry string, b retentionBody) error {
	if h.opts.Retention == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "Retention policies are not available on this arca server."}
	}
	p, err := h.opts.Retention.GetRetentionPolicy(ctx, registry)
	if err != nil {
		return err
	}
	if b.Days.value() {
		if b.Days.V < 0 || b.Days.V > maxRetentionDays {
			return errBadRequest("InvalidRetentionDays", "The retention policy's days must be between 0 and 365.")
		}
		p.Days = b.Days.V
	}
	if b.Status.value() {
		switch strings.ToLower(b.Status.V) {
		case "enabled":
			p.Enabled = true
		case "disabled":
			p.Enabled = false
		default:
			return errBadRequest("InvalidRetentionStatus", "The retention policy's status must be enabled or disabled.")
		}
	}
	return h.opts.Retention.PutRetentionPolicy(ctx, p)
}

// retentionJSON is a registry's properties.policies.retentionPolicy.
func (h *Handler) retentionJSON(ctx context.Context, registry string) (map[string]any, error) {
	p := metadata.RetentionPolicy{Days: metadata.DefaultRetentionDays}
	if h.opts.Retention != nil {
		var err error
		if p, err = h.opts.Retention.GetRetentionPolicy(ctx, registry); err != nil {
			return nil, err
		}
	}
	v := map[string]any{"days": p.Days, "status": "disabled"}
	if p.Enabled {
		v["status"] = "enabled"
	}
	if !p.UpdatedAt.IsZero() {
		v["lastUpdatedTime"] = timeJSON(p.UpdatedAt)
	}
	return v, nil
}

// garbageCollect is POST .../registries/R/garbageCollect (arca's own
// action): one garbage collection run now, {"dryRun": true} to only count.
// It answers when the run ends with what it reclaimed. The run's blob and
// upload phases are store-wide (registries share blobs); its untagged
// manifest phase is R's.
func (h *Handler) garbageCollect(w http.ResponseWriter, req *request) error {
	if req.r.Method != http.MethodPost {
		return errMethod(req.r)
	}
	if h.opts.GC == nil {
		return &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "Garbage collection is not available on this arca server."}
	}
	var body struct {
		DryRun bool `json:"dryRun"`
	}
	if req.r.ContentLength != 0 {
		if err := readBody(req.r, &body); err != nil {
			return err
		}
	}
	res, err := h.opts.GC.Run(req.r.Context(), gc.Request{Registry: req.registry, DryRun: body.DryRun})
	if errors.Is(err, gc.ErrBusy) {
		return &apiError{Status: http.StatusConflict, Code: "GarbageCollectionInProgress", Message: "Garbage collection is already running (on this or another replica): try again when it ends."}
	}
	if err != nil {
		return err
	}
	h.log.Info("garbage collection on demand", "registry", req.registry, "dry_run", body.DryRun, "blobs", res.Blobs, "blob_bytes", res.BlobBytes)
	writeJSON(w, http.StatusOK, res)
	return nil
}
