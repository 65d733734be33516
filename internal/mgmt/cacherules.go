package mgmt

import (
	"context"
	"errors"
	"net/http"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

func (h *Handler) cacheRules(w http.ResponseWriter, req *request) error {
	return h.serveResource(w, req, resourceOps{noun: "cache rule", list: h.listCacheRules,
		get: h.getCacheRule, write: h.writeCacheRule, del: h.deleteCacheRule})
}

func (h *Handler) getCacheRule(w http.ResponseWriter, req *request) error {
	r, err := h.opts.Store.GetCacheRule(req.r.Context(), req.registry, req.name)
	if errors.Is(err, metadata.ErrNotFound) {
		return errCacheRuleNotFound(req.name)
	}
	if err != nil {
		return err
	}
	out := h.cacheRuleJSONOf(req.registry, r, req.v)
	if src, err := rules.ParseSource(r.Source); err == nil {
		out.Properties.UpstreamRateLimit = h.rateLimitOf(req.r.Context(), req.registry, r.CredentialSet, src.LoginServer)
		out.Properties.UpstreamHealth = h.upstreamHealthOf(src.LoginServer)
	}
	if r.Identity != "" && h.opts.IdentityChecker != nil {
		ctx, cancel := context.WithTimeout(req.r.Context(), h.opts.CheckTimeout)
		st := h.opts.IdentityChecker.CheckIdentity(ctx, req.registry, r)
		cancel()
		out.Properties.IdentityStatus = &st
	}
	if h.opts.Syncer != nil && req.v.extended && r.Mode() == rules.ActiveSync {
		if st, err := h.opts.Syncer.Status(req.r.Context(), req.registry, r.Name); err == nil {
			out.Properties.ArtifactSyncRun = st
		} else {
			h.log.Warn("active sync status", "registry", req.registry, "rule", r.Name, "err", err)
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func errCacheRuleNotFound(name string) error {
	return errNotFound("ResourceNotFound", "The cache rule "+name+" could not be found.")
}

// writeCacheRule serves PUT (create or replace) and PATCH (update). The
// checks and the write share one transaction.
func (h *Handler) writeCacheRule(w http.ResponseWriter, req *request, patch bool) error {
	var body cacheRuleBody
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	var out rules.Rule
	var created bool
	var op metadata.Operation
	err := h.opts.Store.UpdateRules(req.r.Context(), req.registry, func(tx metadata.RulesTx) error {
		var err error
		out, created, err = h.putCacheRule(tx, req, body, patch)
		if err != nil || !(created || patch) {
			return err
		}
		op, err = h.recordOperation(tx, req, "cacheRules", out.Name)
		return err
	})
	if err != nil {
		return err
	}
	h.changed(req.registry)
	verb := map[bool]string{true: "created", false: "updated"}[created]
	h.log.Info("cache rule "+verb, "registry", req.registry, "name", out.Name, "source", out.Source, "target", out.Target,
		"credential_set", out.CredentialSet, "sync_mode", string(out.Mode()))
	out.ProvisioningState = transientState(out.ProvisioningState, created, patch)
	return h.respondWrite(w, req, op, created || patch, h.cacheRuleJSONOf(req.registry, out, req.v))
}

// putCacheRule applies body to the stored rule (or a new one), checks the
// result against the registry and writes it.
func (h *Handler) putCacheRule(tx metadata.RulesTx, req *request, body cacheRuleBody, patch bool) (rules.Rule, bool, error) {
	prev, exists, err := tx.CacheRule(req.name)
	if err != nil {
		return rules.Rule{}, false, err
	}
	if patch && !exists {
		return rules.Rule{}, false, errCacheRuleNotFound(req.name)
	}
	r := rules.Rule{Name: req.name}
	if exists {
		r = prev // keeps the name's original case, creation date and sync status
	}
	if err := h.applyCacheRule(&r, body, req, patch); err != nil {
		return rules.Rule{}, false, err
	}
	all, err := tx.CacheRules()
	if err != nil {
		return rules.Rule{}, false, err
	}
	env := rules.Env{MaxRules: h.opts.MaxRules, CredentialSet: tx.CredentialSet,
		RepositoryExists: tx.RepositoryExists, RepositoryUnder: tx.RepositoryUnder}
	for _, o := range all {
		if !eq(o.Name, req.name) {
			env.Others = append(env.Others, o)
		}
	}
	var prevp *rules.Rule
	if exists {
		prevp = &prev
	}
	if err := rules.Check(&r, prevp, env); err != nil {
		return rules.Rule{}, false, err
	}
	now := h.opts.Now().UTC()
	if !exists {
		r.CreatedAt = now
	}
	r.ModifiedAt, r.ProvisioningState = now, rules.StateSucceeded
	return r, !exists, tx.PutCacheRule(r)
}

// transientState is the provisioningState a write answers with: ACR's
// Creating/Updating for creates and PATCHes (see respondWrite).
func transientState(state string, created, patch bool) string {
	switch {
	case created:
		return rules.StateCreating
	case patch:
		return rules.StateUpdating
	}
	return state
}

// respondWrite answers a PUT or PATCH as ACR does: a create or a PATCH is
// 201 with an Azure-AsyncOperation header and the body in the transient
// state (Creating/Updating) that ARM clients expect to poll through; the
// operation document already says Succeeded. A replacing PUT is a plain 200.
func (h *Handler) respondWrite(w http.ResponseWriter, req *request, op metadata.Operation, async bool, body any) error {
	if !async {
		writeJSON(w, http.StatusOK, body)
		return nil
	}
	w.Header().Set("Azure-AsyncOperation", h.asyncOperationURL(req, op))
	writeJSON(w, http.StatusCreated, body)
	return nil
}

func (h *Handler) deleteCacheRule(w http.ResponseWriter, req *request) error {
	return h.deleteResource(w, req, "cacheRules", "cache rule", func(tx metadata.RulesTx) (bool, error) {
		return tx.DeleteCacheRule(req.name)
	})
}

func (h *Handler) listCacheRules(w http.ResponseWriter, req *request) error {
	return servePage(h, w, req, h.opts.Store.ListCacheRulesPage, func(r rules.Rule) string { return r.Name },
		func(r rules.Rule) cacheRuleJSON { return h.cacheRuleJSONOf(req.registry, r, req.v) })
}
