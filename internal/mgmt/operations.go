package mgmt

import (
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/uuid"

	"github.com/arcacache/arca/internal/metadata"
)

// Operation statuses (ARM's async operation vocabulary).
const (
	opSucceeded = "Succeeded"
	opFailed    = "Failed"
)

// newOperation returns the record of an operation on resource id. arca
// commits every change before it answers, so operations are recorded
// finished; they are stored (not kept in memory) so any replica answers
// the poll.
func (h *Handler) newOperation(kind, registry, resourceID string) metadata.Operation {
	now := h.opts.Now().UTC()
	return metadata.Operation{
		ID:        strings.ToLower(kind) + "-" + uuid.NewString(),
		Registry:  registry,
		Resource:  resourceID,
		Status:    opSucceeded,
		StartedAt: now,
		EndedAt:   now,
	}
}

// asyncOperationURL is the Azure-AsyncOperation URL of op (as ACR:
// <resource>/operationStatuses/<id>?api-version=...).
func (h *Handler) asyncOperationURL(req *request, op metadata.Operation) string {
	return h.baseURL(req.r) + op.Resource + "/operationStatuses/" + op.ID + "?api-version=" + url.QueryEscape(req.v.value)
}

// operationResultURL is the Location URL of a delete (as ACR:
// /subscriptions/<sub>/providers/Microsoft.ContainerRegistry/locations/<loc>/operationResults/<id>).
func (h *Handler) operationResultURL(req *request, op metadata.Operation) string {
	return h.baseURL(req.r) + "/subscriptions/" + h.opts.SubscriptionID + "/providers/Microsoft.ContainerRegistry/locations/" +
		h.opts.Location + "/operationResults/" + op.ID + "?api-version=" + url.QueryEscape(req.v.value)
}

// operationStatus serves GET <resource>/operationStatuses/<id>.
func (h *Handler) operationStatus(w http.ResponseWriter, req *request) error {
	op, err := h.opts.Store.GetOperation(req.r.Context(), req.opID)
	resource := h.resourceID(req.registry, req.kind, req.name)
	if errors.Is(err, metadata.ErrNotFound) || (err == nil && !strings.EqualFold(op.Resource, resource)) {
		return errNotFound("ResourceNotFound", "The operation '"+req.opID+"' could not be found.")
	}
	if err != nil {
		return err
	}
	doc := map[string]any{
		"id":        resource + "/operationStatuses/" + op.ID,
		"name":      op.ID,
		"status":    op.Status,
		"startTime": armTime(op.StartedAt),
	}
	if !op.EndedAt.IsZero() {
		doc["endTime"] = armTime(op.EndedAt)
	}
	if op.Status == opFailed {
		doc["error"] = map[string]string{"code": op.ErrorCode, "message": op.ErrorMsg}
	} else if op.Status != opSucceeded {
		w.Header().Set("Azure-AsyncOperation", h.asyncOperationURL(req, op))
	}
	writeJSON(w, http.StatusOK, doc)
	return nil
}

// operationResult serves GET .../locations/<loc>/operationResults/<id>:
// 202 while running, 200 with an empty body when done, the error when
// failed.
func (h *Handler) operationResult(w http.ResponseWriter, req *request) error {
	op, err := h.opts.Store.GetOperation(req.r.Context(), req.opID)
	if errors.Is(err, metadata.ErrNotFound) {
		return errNotFound("ResourceNotFound", "The operation '"+req.opID+"' could not be found.")
	}
	if err != nil {
		return err
	}
	switch op.Status {
	case opSucceeded:
		w.WriteHeader(http.StatusOK)
	case opFailed:
		return &apiError{Status: http.StatusBadRequest, Code: op.ErrorCode, Message: op.ErrorMsg}
	default:
		w.Header().Set("Location", h.operationResultURL(req, op))
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusAccepted)
	}
	return nil
}
