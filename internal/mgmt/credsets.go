package mgmt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

func (h *Handler) credentialSets(w http.ResponseWriter, req *request) error {
	return h.serveResource(w, req, resourceOps{noun: "credential set", list: h.listCredentialSets,
		get: h.getCredentialSet, write: h.writeCredentialSet, del: h.deleteCredentialSet})
}

func (h *Handler) getCredentialSet(w http.ResponseWriter, req *request) error {
	c, err := h.opts.Store.GetCredentialSet(req.r.Context(), req.registry, req.name)
	if errors.Is(err, metadata.ErrNotFound) {
		return errCredentialSetNotFound(req.name)
	}
	if err != nil {
		return err
	}
	h.health.refreshIfOld(req.registry, c)
	out := h.credentialSetJSONOf(req.registry, c)
	out.Properties.UpstreamRateLimit = h.rateLimitOf(req.r.Context(), req.registry, c.Name, c.LoginServer)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func errCredentialSetNotFound(name string) error {
	return errNotFound("ResourceNotFound", "The credential set "+name+" could not be found.")
}

// writeCredentialSet serves PUT and PATCH. The credentials are checked
// before the transaction (a check does network I/O); the set is saved even
// when they are unhealthy, as ACR does.
func (h *Handler) writeCredentialSet(w http.ResponseWriter, req *request, patch bool) error {
	ctx := req.r.Context()
	var body credentialSetBody
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	prev, err := h.opts.Store.GetCredentialSet(ctx, req.registry, req.name)
	exists := err == nil
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return err
	}
	if patch && !exists {
		return errCredentialSetNotFound(req.name)
	}
	c := rules.CredentialSet{Name: req.name}
	if exists {
		c = prev
	}
	if err := applyCredentialSet(&c, body, patch); err != nil {
		return err
	}
	if err := c.Validate(h.opts.ValidateSecretRef); err != nil {
		return err
	}
	c.Health = h.checkCredentials(ctx, c)

	var op metadata.Operation
	var created bool
	err = h.opts.Store.UpdateRules(ctx, req.registry, func(tx metadata.RulesTx) error {
		var err error
		if created, err = h.putCredentialSet(tx, req, &c, patch); err != nil || !(created || patch) {
			return err
		}
		op, err = h.recordOperation(tx, req, "credentialSets", c.Name)
		return err
	})
	if err != nil {
		return err
	}
	h.changed(req.registry)
	h.log.Info("credential set saved", "registry", req.registry, "name", c.Name, "created", created,
		"login_server", c.LoginServer, "identity", c.Identity, "health", c.Health.Status, "health_code", c.Health.ErrorCode)
	c.ProvisioningState = transientState(c.ProvisioningState, created, patch)
	return h.respondWrite(w, req, op, created || patch, h.credentialSetJSONOf(req.registry, c))
}

// putCredentialSet writes c, keeping the stored set's name case, identity
// and creation date; it reports whether the set is new.
func (h *Handler) putCredentialSet(tx metadata.RulesTx, req *request, c *rules.CredentialSet, patch bool) (bool, error) {
	cur, found, err := tx.CredentialSet(req.name)
	if err != nil {
		return false, err
	}
	if patch && !found {
		return false, errCredentialSetNotFound(req.name)
	}
	now := h.opts.Now().UTC()
	if found {
		c.Name, c.PrincipalID, c.CreatedAt = cur.Name, cur.PrincipalID, cur.CreatedAt
		if err := loginServerChangeAllowed(tx, cur, *c); err != nil {
			return false, err
		}
	} else {
		c.PrincipalID, c.CreatedAt = uuid.NewString(), now
	}
	c.ModifiedAt, c.ProvisioningState = now, rules.StateSucceeded
	return !found, tx.PutCredentialSet(*c)
}

// checkCredentials runs the checker with a time limit.
func (h *Handler) checkCredentials(ctx context.Context, c rules.CredentialSet) rules.Health {
	ctx, cancel := context.WithTimeout(ctx, h.opts.CheckTimeout)
	defer cancel()
	status, code, msg := h.opts.Checker.Check(ctx, c)
	if status != rules.Healthy {
		status = rules.Unhealthy
	}
	return rules.Health{Status: status, ErrorCode: code, ErrorMessage: msg}
}

// loginServerChangeAllowed refuses to move a set that rules use to another
// login server: their sources would no longer match it.
func loginServerChangeAllowed(tx metadata.RulesTx, cur, next rules.CredentialSet) error {
	if rules.CanonicalLoginServer(cur.LoginServer) == rules.CanonicalLoginServer(next.LoginServer) {
		return nil
	}
	all, err := tx.CacheRules()
	if err != nil {
		return err
	}
	if users := rules.RulesUsing(cur.Name, all); len(users) > 0 {
		return &rules.Error{Code: rules.CodeCredentialSetInUse, Message: fmt.Sprintf(
			"The login server of credential set '%s' cannot change from '%s' to '%s' while cache rules use it: %s.",
			cur.Name, cur.LoginServer, next.LoginServer, strings.Join(users, ", "))}
	}
	return nil
}

func (h *Handler) deleteCredentialSet(w http.ResponseWriter, req *request) error {
	return h.deleteResource(w, req, "credentialSets", "credential set", func(tx metadata.RulesTx) (bool, error) {
		all, err := tx.CacheRules()
		if err != nil {
			return false, err
		}
		if users := rules.RulesUsing(req.name, all); len(users) > 0 {
			return false, &rules.Error{Code: rules.CodeCredentialSetInUse, Message: fmt.Sprintf(
				"The credential set '%s' cannot be deleted: cache rules use it: %s. Remove it from those rules or delete them first.",
				req.name, strings.Join(users, ", "))}
		}
		return tx.DeleteCredentialSet(req.name)
	})
}

func (h *Handler) listCredentialSets(w http.ResponseWriter, req *request) error {
	return servePage(h, w, req, h.opts.Store.ListCredentialSetsPage, func(c rules.CredentialSet) string { return c.Name },
		func(c rules.CredentialSet) credentialSetJSON {
			h.health.refreshIfOld(req.registry, c)
			return h.credentialSetJSONOf(req.registry, c)
		})
}
