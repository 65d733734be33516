package mgmt

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/metadata"
)

// Operation statuses (ARM's async operation vocabulary).
const (
	opInProgress = "InProgress"
	opSucceeded  = "Succeeded"
	opFailed     = "Failed"
	opCanceled   = "Canceled"
)

// operations are the handler's operations that outlive their request.
type operations struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StopOperations cancels the operations still running on this replica
// and waits, within ctx, until they recorded how they ended.
func (h *Handler) StopOperations(ctx context.Context) {
	h.ops.cancel()
	done := make(chan struct{})
	go func() { h.ops.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// current is op as a poll answers it: an InProgress operation whose
// replica stopped writing it (killed) has failed.
func (h *Handler) current(op metadata.Operation) metadata.Operation {
	if op.Status == opInProgress && !op.UpdatedAt.IsZero() && h.opts.Now().Sub(op.UpdatedAt) > opStale {
		op.Status, op.EndedAt, op.ErrorCode = opFailed, op.UpdatedAt, "OperationAbandoned"
		op.ErrorMsg = "The server running the operation stopped before it ended; run it again."
	}
	return op
}

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

// operationStatus serves GET <resource>/operationStatuses/<id> (the
// resource: a cache rule, a credential set, or a registry).
func (h *Handler) operationStatus(w http.ResponseWriter, req *request) error {
	op, err := h.opts.Store.GetOperation(req.r.Context(), req.opID)
	resource := h.resourceID(req.registry, req.kind, req.name)
	if req.kind == kindRegistryOperation {
		resource = h.registryID(req.registry)
	}
	if errors.Is(err, metadata.ErrNotFound) || (err == nil && !strings.EqualFold(op.Resource, resource)) {
		return errNotFound("ResourceNotFound", "The operation '"+req.opID+"' could not be found.")
	}
	if err != nil {
		return err
	}
	h.writeOperationStatus(w, req, op)
	return nil
}

// writeOperationStatus answers with op's status document as a poll sees
// it; while it runs, with where and when to poll again.
func (h *Handler) writeOperationStatus(w http.ResponseWriter, req *request, op metadata.Operation) {
	op = h.current(op)
	if op.Status == opInProgress {
		w.Header().Set("Azure-AsyncOperation", h.asyncOperationURL(req, op))
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, http.StatusOK, h.operationDoc(op))
}

// operationDoc is ARM's async operation status document of op; an
// operation's own progress or result is its properties.
func (h *Handler) operationDoc(op metadata.Operation) map[string]any {
	doc := map[string]any{
		"id":        op.Resource + "/operationStatuses/" + op.ID,
		"name":      op.ID,
		"status":    op.Status,
		"startTime": armtime.Format(op.StartedAt),
	}
	if !op.EndedAt.IsZero() {
		doc["endTime"] = armtime.Format(op.EndedAt)
	}
	if op.Properties != "" {
		doc["properties"] = json.RawMessage(op.Properties)
	}
	if op.Status == opFailed || op.Status == opCanceled {
		doc["error"] = map[string]string{"code": op.ErrorCode, "message": op.ErrorMsg}
	}
	return doc
}

// operationResult serves GET .../locations/<loc>/operationResults/<id>:
// 202 while running, 200 with the operation's result (an empty body when
// it has none) when done, the error when failed. The path names no
// registry, so the caller must have read access to the operation's.
func (h *Handler) operationResult(w http.ResponseWriter, req *request) error {
	op, err := h.opts.Store.GetOperation(req.r.Context(), req.opID)
	if errors.Is(err, metadata.ErrNotFound) || (err == nil && op.Registry != "" && !req.caller.allows(levelRead, op.Registry)) {
		return errNotFound("ResourceNotFound", "The operation '"+req.opID+"' could not be found.")
	}
	if err != nil {
		return err
	}
	op = h.current(op)
	switch op.Status {
	case opSucceeded:
		if op.Properties == "" {
			w.WriteHeader(http.StatusOK)
			return nil
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, op.Properties)
	case opFailed, opCanceled:
		return &apiError{Status: http.StatusBadRequest, Code: op.ErrorCode, Message: op.ErrorMsg}
	default:
		w.Header().Set("Location", h.operationResultURL(req, op))
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusAccepted)
	}
	return nil
}
