package mgmt

import (
	"context"
	"errors"
	"net/http"
	"net/url"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// resourceOps are the handlers of one child resource type (cache rules,
// credential sets); serveResource routes a call to them the same way for
// every type.
type resourceOps struct {
	noun string // "cache rule": in name validation errors
	// valid checks a name (default: rules.ValidateName with noun).
	valid func(name string) error
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
	valid := ops.valid
	if valid == nil {
		valid = func(name string) error { return rules.ValidateName(ops.noun, name) }
	}
	if err := valid(req.name); err != nil {
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

// serveOne answers a GET with what get finds, or notFound's error when
// there is nothing.
func serveOne[T any](w http.ResponseWriter, get func() (T, error), notFound func() error, toJSON func(T) any) error {
	v, err := get()
	if errors.Is(err, metadata.ErrNotFound) {
		return notFound()
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toJSON(v))
	return nil
}

// serveList answers a GET of a collection that is not paged.
func serveList[T any](w http.ResponseWriter, items []T, toJSON func(T) any) {
	list := make([]any, 0, len(items))
	for _, it := range items {
		list = append(list, toJSON(it))
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": list})
}

// writeDeleted answers a DELETE whose store call returned err: 204 when
// there was nothing to delete, 200 once after (if set) has run.
func writeDeleted(w http.ResponseWriter, err error, after func() error) error {
	if errors.Is(err, metadata.ErrNotFound) {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if err != nil {
		return err
	}
	if after != nil {
		if err := after(); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// writtenStatus is the status of a PUT or PATCH: 201 when it created the
// resource, else 200.
func writtenStatus(created bool) int {
	if created {
		return http.StatusCreated
	}
	return http.StatusOK
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
