package mgmt

import (
	"context"
	"net/http"
	"net/url"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// resourceOps are the handlers of one child resource type (cache rules,
// credential sets); serveResource routes a call to them the same way for
// every type.
type resourceOps struct {
	noun  string // "cache rule": in name validation errors
	list  func(http.ResponseWriter, *request) error
	get   func(http.ResponseWriter, *request) error
	write func(w http.ResponseWriter, req *request, patch bool) error
	del   func(http.ResponseWriter, *request) error
}

// serveResource routes a call on a collection (GET lists) or on one named
// resource (GET, PUT, PATCH, DELETE).
func (h *Handler) serveResource(w http.ResponseWriter, req *request, ops resourceOps) error {
	m := req.r.Method
	if req.name == "" {
		if m != http.MethodGet {
			return errMethod(req.r)
		}
		return ops.list(w, req)
	}
	if err := rules.ValidateName(ops.noun, req.name); err != nil {
		return err
	}
	switch m {
	case http.MethodGet:
		return ops.get(w, req)
	case http.MethodPut, http.MethodPatch:
		return ops.write(w, req, m == http.MethodPatch)
	case http.MethodDelete:
		return ops.del(w, req)
	}
	return errMethod(req.r)
}

// recordOperation stores the (finished) operation of a change to the
// resource kind/name in the change's own transaction.
func (h *Handler) recordOperation(tx metadata.RulesTx, req *request, kind, name string) (metadata.Operation, error) {
	op := h.newOperation(kind, req.registry, h.resourceID(req.registry, kind, name))
	return op, tx.PutOperation(op)
}

// deleteResource serves DELETE as ACR does: 204 when there was nothing to
// delete, else 202 with a Location to poll. del removes req.name inside the
// transaction and reports whether it existed.
func (h *Handler) deleteResource(w http.ResponseWriter, req *request, kind, noun string, del func(metadata.RulesTx) (bool, error)) error {
	var op metadata.Operation
	var deleted bool
	err := h.opts.Store.UpdateRules(req.r.Context(), req.registry, func(tx metadata.RulesTx) error {
		var err error
		if deleted, err = del(tx); err != nil || !deleted {
			return err
		}
		op, err = h.recordOperation(tx, req, kind, req.name)
		return err
	})
	if err != nil {
		return err
	}
	if !deleted {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	h.changed(req.registry)
	h.log.Info(noun+" deleted", "registry", req.registry, "name", req.name)
	w.Header().Set("Location", h.operationResultURL(req, op))
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// listPage is one page of a list response.
type listPage[J any] struct {
	Value    []J    `json:"value"`
	NextLink string `json:"nextLink,omitempty"`
}

// servePage answers a list call with the page after $skipToken (the name
// of the previous page's last item).
func servePage[T, J any](h *Handler, w http.ResponseWriter, req *request,
	fetch func(ctx context.Context, registry, after string, n int) ([]T, bool, error),
	name func(T) string, toJSON func(T) J) error {
	after := req.r.URL.Query().Get("$skipToken")
	list, more, err := fetch(req.r.Context(), req.registry, after, h.opts.PageSize)
	if err != nil {
		return err
	}
	page := listPage[J]{Value: make([]J, 0, len(list))}
	for _, it := range list {
		page.Value = append(page.Value, toJSON(it))
	}
	if more {
		page.NextLink = h.nextLink(req, name(list[len(list)-1]))
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// nextLink is the URL of the page after the item named last.
func (h *Handler) nextLink(req *request, last string) string {
	q := url.Values{"api-version": {req.v.value}, "$skipToken": {last}}
	return h.baseURL(req.r) + req.r.URL.Path + "?" + q.Encode()
}
