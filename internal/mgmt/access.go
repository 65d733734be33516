package mgmt

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/auth"
	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// AccessStore keeps registry settings, scope maps and tokens.
type AccessStore interface {
	GetRegistrySettings(ctx context.Context, registry string) (metadata.RegistrySettings, error)
	UpdateRegistrySettings(ctx context.Context, registry string, fn func(*metadata.RegistrySettings) error) error
	GetScopeMap(ctx context.Context, registry, name string) (metadata.ScopeMap, error)
	ListScopeMaps(ctx context.Context, registry string) ([]metadata.ScopeMap, error)
	PutScopeMap(ctx context.Context, registry string, m metadata.ScopeMap) (bool, error)
	DeleteScopeMap(ctx context.Context, registry, name string) error
	GetToken(ctx context.Context, registry, name string) (metadata.Token, error)
	ListTokens(ctx context.Context, registry string) ([]metadata.Token, error)
	UpdateToken(ctx context.Context, registry, name string, fn func(tk *metadata.Token, created bool) error) (bool, error)
	DeleteToken(ctx context.Context, registry, name string) error
	RevokeRefreshTokens(ctx context.Context, registry, kind, subject string) error
	CreateRegistry(ctx context.Context, r metadata.RegistryRecord, s metadata.RegistrySettings) error
	SetRegistryHosts(ctx context.Context, name string, hosts []string) error
	DeleteRegistry(ctx context.Context, name string) error
}

const (
	typeScopeMap = "Microsoft.ContainerRegistry/registries/scopeMaps"
	typeToken    = "Microsoft.ContainerRegistry/registries/tokens"
)

var scopeMapNameRe = regexp.MustCompile(`^[a-zA-Z0-9_-]{5,50}$`)

func (h *Handler) access() (AccessStore, error) {
	if h.opts.Access == nil {
		return nil, &apiError{Status: http.StatusNotImplemented, Code: "NotImplemented", Message: "This server has no access-control store."}
	}
	return h.opts.Access, nil
}

// timeJSON is armtime.Format for documents built as maps: null for the zero time.
func timeJSON(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return armtime.Format(t)
}

func disabled() map[string]any { return map[string]any{"status": "disabled"} }

// registryJSON is a registry resource as ACR shapes it. loginServer is its
// first host name, or (for the default registry without host names) the
// host the request reached.
func (h *Handler) registryJSON(r *http.Request, reg Registry, s metadata.RegistrySettings) map[string]any {
	login := r.Host
	if len(reg.Hosts) > 0 {
		login = reg.Hosts[0]
	}
	if s.SKU == "" {
		s.SKU = "Standard"
	}
	tags := s.Tags
	if tags == nil {
		tags = map[string]string{}
	}
	return map[string]any{
		"id": h.registryID(reg.Name), "name": reg.Name, "type": typeRegistry, "location": h.opts.Location, "tags": tags,
		"sku": map[string]any{"name": s.SKU, "tier": s.SKU},
		"properties": map[string]any{
			"loginServer":                login,
			"creationDate":               timeJSON(s.Created),
			"provisioningState":          rules.StateSucceeded,
			"status":                     nil,
			"adminUserEnabled":           s.AdminEnabled,
			"anonymousPullEnabled":       s.AnonymousPull,
			"publicNetworkAccess":        orDefault(s.PublicNetworkAccess, "Enabled"),
			"dataEndpointEnabled":        s.DataEndpointEnabled,
			"dataEndpointHostNames":      []string{},
			"networkRuleBypassOptions":   "AzureServices",
			"zoneRedundancy":             "Disabled",
			"roleAssignmentMode":         orDefault(s.RoleAssignmentMode, "LegacyRegistryPermissions"),
			"encryption":                 map[string]any{"status": "disabled"},
			"privateEndpointConnections": []any{},
			"policies": map[string]any{
				"quarantinePolicy":                 disabled(),
				"trustPolicy":                      map[string]any{"type": "Notary", "status": "disabled"},
				"retentionPolicy":                  map[string]any{"days": metadata.DefaultRetentionDays, "status": "disabled"},
				"exportPolicy":                     map[string]any{"status": "enabled"},
				"azureADAuthenticationAsArmPolicy": map[string]any{"status": "enabled"},
			},
			// arca's own: every host name the data plane serves it on, and
			// the quotas of cached and of pushed bytes (0: none).
			"hosts":             append([]string{}, reg.Hosts...),
			"cacheQuotaBytes":   s.CacheQuota,
			"storageQuotaBytes": s.StorageQuota,
		},
	}
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func (h *Handler) registryView(r *http.Request, reg Registry) (map[string]any, error) {
	var s metadata.RegistrySettings
	if h.opts.Access != nil {
		var err error
		if s, err = h.opts.Access.GetRegistrySettings(r.Context(), reg.Name); err != nil && !errors.Is(err, metadata.ErrNotFound) {
			return nil, err
		}
	}
	v := h.registryJSON(r, reg, s)
	rp, err := h.retentionJSON(r.Context(), reg.Name)
	if err != nil {
		return nil, err
	}
	v["properties"].(map[string]any)["policies"].(map[string]any)["retentionPolicy"] = rp
	return v, nil
}

// registryBody is a PUT or PATCH body of a registry.
type registryBody struct {
	Location opt[string]            `json:"location"`
	Tags     opt[map[string]string] `json:"tags"`
	SKU      opt[struct {
		Name string `json:"name"`
	}] `json:"sku"`
	Properties struct {
		AdminUserEnabled     opt[bool]   `json:"adminUserEnabled"`
		AnonymousPullEnabled opt[bool]   `json:"anonymousPullEnabled"`
		PublicNetworkAccess  opt[string] `json:"publicNetworkAccess"`
		DataEndpointEnabled  opt[bool]   `json:"dataEndpointEnabled"`
		RoleAssignmentMode   opt[string] `json:"roleAssignmentMode"`
		// Hosts is arca's own: the host names the data plane serves the
		// registry on.
		Hosts opt[[]string] `json:"hosts"`
		// CacheQuotaBytes and StorageQuotaBytes are arca's own: bounds on
		// cached and on pushed bytes (0 or null: none).
		CacheQuotaBytes   opt[int64] `json:"cacheQuotaBytes"`
		StorageQuotaBytes opt[int64] `json:"storageQuotaBytes"`
		Policies          struct {
			RetentionPolicy opt[retentionBody] `json:"retentionPolicy"`
		} `json:"policies"`
	} `json:"properties"`
}

func applyRegistry(s *metadata.RegistrySettings, b registryBody) error {
	if b.SKU.value() {
		sku := canonical(b.SKU.V.Name, "Basic", "Standard", "Premium")
		if sku == "" {
			return errBadRequest("InvalidSku", "The SKU '"+b.SKU.V.Name+"' is invalid: use Basic, Standard or Premium (in arca the SKU changes nothing).")
		}
		s.SKU = sku
	}
	if b.Tags.Set {
		s.Tags = b.Tags.V
	}
	p := b.Properties
	if p.AdminUserEnabled.value() {
		s.AdminEnabled = p.AdminUserEnabled.V
	}
	if p.AnonymousPullEnabled.value() {
		s.AnonymousPull = p.AnonymousPullEnabled.V
	}
	if p.PublicNetworkAccess.value() {
		v := canonical(p.PublicNetworkAccess.V, "Enabled", "Disabled")
		if v == "" {
			return errBadRequest("InvalidRequestContent", "publicNetworkAccess must be Enabled or Disabled.")
		}
		s.PublicNetworkAccess = v
	}
	if p.DataEndpointEnabled.value() {
		s.DataEndpointEnabled = p.DataEndpointEnabled.V
	}
	if p.RoleAssignmentMode.value() {
		v := canonical(p.RoleAssignmentMode.V, "LegacyRegistryPermissions", "AbacRepositoryPermissions")
		if v == "" {
			return errBadRequest("InvalidRequestContent", "roleAssignmentMode must be LegacyRegistryPermissions or AbacRepositoryPermissions.")
		}
		s.RoleAssignmentMode = v
	}
	for _, q := range []struct {
		name string
		in   opt[int64]
		out  *int64
	}{{"cacheQuotaBytes", p.CacheQuotaBytes, &s.CacheQuota}, {"storageQuotaBytes", p.StorageQuotaBytes, &s.StorageQuota}} {
		if !q.in.Set {
			continue
		}
		if q.in.V < 0 {
			return errBadRequest("InvalidRequestContent", q.name+" must be 0 (no quota) or a positive number of bytes.")
		}
		*q.out = q.in.V
	}
	return nil
}

// registryResource serves GET, PUT, PATCH and DELETE on a registry; PUT
// of a new name creates one.
func (h *Handler) registryResource(w http.ResponseWriter, req *request) error {
	reg, exists := h.opts.Registries.Lookup(req.registry)
	switch m := req.r.Method; {
	case m == http.MethodGet && exists:
		v, err := h.registryView(req.r, reg)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	case m == http.MethodDelete:
		return h.deleteRegistry(w, req, reg, exists)
	case m == http.MethodPut && !exists:
		return h.createRegistry(w, req)
	case (m == http.MethodPut || m == http.MethodPatch) && exists:
	case !exists:
		return errRegistryNotFound(req)
	default:
		return errMethod(req.r)
	}
	store, err := h.access()
	if err != nil {
		return err
	}
	var body registryBody
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	if body.Properties.Hosts.Set {
		if reg.Static {
			if !slices.Equal(normalizeHosts(body.Properties.Hosts.V), reg.Hosts) {
				return errBadRequest("PropertyChangeNotAllowed", "The registry "+reg.Name+" is configured at startup (--registry): change its hosts there.")
			}
		} else if err := h.setHosts(req, reg.Name, body.Properties.Hosts.V); err != nil {
			return err
		}
	}
	// Validated and stored first: a refused policy changes nothing else.
	if rp := body.Properties.Policies.RetentionPolicy; rp.value() {
		if err := h.applyRetention(req.r.Context(), req.registry, rp.V); err != nil {
			return err
		}
	}
	var adminOff bool
	err = store.UpdateRegistrySettings(req.r.Context(), req.registry, func(s *metadata.RegistrySettings) error {
		was := s.AdminEnabled
		if err := applyRegistry(s, body); err != nil {
			return err
		}
		adminOff = was && !s.AdminEnabled
		return nil
	})
	if err != nil {
		return err
	}
	if h.opts.OnAccessChange != nil {
		h.opts.OnAccessChange(req.registry)
	}
	if adminOff {
		if err := store.RevokeRefreshTokens(req.r.Context(), req.registry, auth.KindAdmin, req.registry); err != nil {
			return err
		}
	}
	reg, _ = h.opts.Registries.Lookup(req.registry)
	v, err := h.registryView(req.r, reg)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func errRegistryNotFound(req *request) error {
	return errNotFound("ResourceNotFound", "The Resource 'Microsoft.ContainerRegistry/registries/"+req.registry+"' was not found.")
}

func normalizeHosts(hosts []string) []string {
	out := []string{}
	for _, h := range hosts {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			out = append(out, h)
		}
	}
	return out
}

// setHosts changes a managed registry's hosts, in the set and the store.
func (h *Handler) setHosts(req *request, name string, hosts []string) error {
	// The store first: another replica's sync (or this one's) follows
	// the store, so it must never lag the in-memory set.
	reg := Registry{Name: name, Hosts: normalizeHosts(hosts)}
	if err := h.opts.Registries.Check(reg); err != nil {
		return errBadRequest("InvalidHosts", err.Error())
	}
	if err := h.opts.Access.SetRegistryHosts(req.r.Context(), name, reg.Hosts); err != nil {
		return err
	}
	return h.opts.Registries.Add(reg)
}

// createRegistry serves PUT of a new registry. Without properties.hosts
// it is served at <name>.localhost (any port).
func (h *Handler) createRegistry(w http.ResponseWriter, req *request) error {
	store, err := h.access()
	if err != nil {
		return err
	}
	if !rules.ValidRegistryName(req.registry) {
		return errBadRequest("InvalidResourceName", "Registry names may contain only alpha numeric characters and must be between 5 and 50 characters.")
	}
	var body registryBody
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	if !body.SKU.value() {
		return errBadRequest("InvalidRequestContent", "sku is required: {\"sku\":{\"name\":\"Standard\"}} (Basic, Standard or Premium; in arca it changes nothing).")
	}
	set := metadata.RegistrySettings{SKU: "Standard", PublicNetworkAccess: "Enabled", RoleAssignmentMode: "LegacyRegistryPermissions"}
	if err := applyRegistry(&set, body); err != nil {
		return err
	}
	hosts := []string{req.registry + ".localhost"}
	if body.Properties.Hosts.value() {
		hosts = normalizeHosts(body.Properties.Hosts.V)
	}
	reg := Registry{Name: req.registry, Hosts: hosts}
	if err := h.opts.Registries.Check(reg); err != nil {
		return errBadRequest("InvalidHosts", err.Error())
	}
	// The store first (see setHosts).
	if err := store.CreateRegistry(req.r.Context(), metadata.RegistryRecord{Name: reg.Name, Hosts: hosts}, set); err != nil {
		return err
	}
	if err := h.opts.Registries.Add(reg); err != nil {
		return err
	}
	h.changed(reg.Name)
	if h.opts.OnAccessChange != nil {
		h.opts.OnAccessChange(reg.Name)
	}
	reg, _ = h.opts.Registries.Lookup(reg.Name)
	v, err := h.registryView(req.r, reg)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// deleteRegistry serves DELETE: a registry the API created goes with its
// repositories, rules, scope maps and tokens; one configured at startup
// cannot be deleted.
func (h *Handler) deleteRegistry(w http.ResponseWriter, req *request, reg Registry, exists bool) error {
	if !exists {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if reg.Static {
		return &apiError{Status: http.StatusConflict, Code: "RegistryConfiguredAtStartup",
			Message: "The registry " + reg.Name + " is configured at startup (--registry-name or --registry) and cannot be deleted through the API."}
	}
	store, err := h.access()
	if err != nil {
		return err
	}
	if err := store.DeleteRegistry(req.r.Context(), reg.Name); err != nil {
		return err
	}
	if err := h.opts.Registries.Remove(reg.Name); err != nil {
		return err
	}
	h.changed(reg.Name)
	if h.opts.OnAccessChange != nil {
		h.opts.OnAccessChange(reg.Name)
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

type passwordJSON struct {
	Name         string `json:"name"`
	Value        string `json:"value,omitempty"`
	CreationTime any    `json:"creationTime,omitempty"`
	Expiry       any    `json:"expiry,omitempty"`
}

// newPassword generates a password and its hash.
func newPassword() (value, hash string, err error) {
	if value, err = auth.GenerateSecret(); err != nil {
		return "", "", err
	}
	hash, err = auth.HashPassword(value)
	return value, hash, err
}

var adminPasswordNames = [2]string{"password", "password2"}

// adminCredentials serves listCredentials and regenerateCredential. Only
// hashes are stored, so a password's value is returned once: when it is
// generated (listCredentials generates both the first time).
func (h *Handler) adminCredentials(w http.ResponseWriter, req *request) error {
	if req.r.Method != http.MethodPost {
		return errMethod(req.r)
	}
	store, err := h.access()
	if err != nil {
		return err
	}
	regen := -1
	if req.kind == "regenerateCredential" {
		var body struct {
			Name string `json:"name"`
		}
		if err := readBody(req.r, &body); err != nil {
			return err
		}
		for i, n := range adminPasswordNames {
			if strings.EqualFold(body.Name, n) {
				regen = i
			}
		}
		if regen < 0 {
			return errBadRequest("InvalidRequestContent", "name must be password or password2.")
		}
	}
	var values [2]string
	err = store.UpdateRegistrySettings(req.r.Context(), req.registry, func(s *metadata.RegistrySettings) error {
		if !s.AdminEnabled {
			return errBadRequest("AdminUserDisabled", "The admin user is disabled. Run 'arca update -n "+req.registry+" --admin-enabled true' to enable admin first.")
		}
		for i := range s.AdminPasswords {
			if i == regen || s.AdminPasswords[i] == "" {
				v, hash, err := newPassword()
				if err != nil {
					return err
				}
				values[i], s.AdminPasswords[i] = v, hash
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	pw := make([]passwordJSON, 2)
	for i, n := range adminPasswordNames {
		pw[i] = passwordJSON{Name: n, Value: values[i]}
	}
	writeJSON(w, http.StatusOK, map[string]any{"username": req.registry, "passwords": pw})
	return nil
}

// scopeMapJSON shapes a scope map resource.
func (h *Handler) scopeMapJSON(reg string, m metadata.ScopeMap, system bool) map[string]any {
	typ := "UserDefined"
	if system {
		typ = "SystemDefined"
	}
	return map[string]any{
		"id": h.resourceID(reg, "scopeMaps", m.Name), "name": m.Name, "type": typeScopeMap,
		"properties": map[string]any{"description": m.Description, "type": typ, "creationDate": timeJSON(m.Created),
			"provisioningState": rules.StateSucceeded, "actions": append([]string{}, m.Actions...)},
	}
}

func systemScopeMap(name string) (metadata.ScopeMap, bool) {
	sm, ok := auth.LookupSystemScopeMap(name)
	return metadata.ScopeMap{Name: sm.Name, Description: sm.Description, Actions: sm.Actions}, ok
}

func errScopeMapNotFound(name string) error {
	return errNotFound("ResourceNotFound", "The scope map "+name+" could not be found.")
}

func (h *Handler) scopeMaps(w http.ResponseWriter, req *request) error {
	store, err := h.access()
	if err != nil {
		return err
	}
	ctx := req.r.Context()
	if req.name != "" && scopeMapNameRe.MatchString(req.name) {
		if m, ok := systemScopeMap(req.name); ok {
			if req.r.Method != http.MethodGet {
				return errBadRequest("SystemScopeMapReadOnly", "The scope map "+m.Name+" is built in and cannot be changed or deleted.")
			}
			writeJSON(w, http.StatusOK, h.scopeMapJSON(req.registry, m, true))
			return nil
		}
	}
	userJSON := func(m metadata.ScopeMap) any { return h.scopeMapJSON(req.registry, m, false) }
	return h.serveResource(w, req, resourceOps{noun: "scope map",
		valid: func(name string) error {
			if !scopeMapNameRe.MatchString(name) {
				return errBadRequest(rules.CodeInvalidName, fmt.Sprintf("scope map name %q is invalid: it must be 5 to 50 characters of letters, digits, dashes and underscores", name))
			}
			return nil
		},
		list: func(w http.ResponseWriter, req *request) error {
			user, err := store.ListScopeMaps(ctx, req.registry)
			if err != nil {
				return err
			}
			all := make([]metadata.ScopeMap, 0, len(auth.SystemScopeMaps)+len(user))
			for _, s := range auth.SystemScopeMaps {
				m, _ := systemScopeMap(s.Name)
				all = append(all, m)
			}
			serveList(w, append(all, user...), func(m metadata.ScopeMap) any {
				_, system := auth.LookupSystemScopeMap(m.Name)
				return h.scopeMapJSON(req.registry, m, system)
			})
			return nil
		},
		get: func(w http.ResponseWriter, req *request) error {
			return serveOne(w, func() (metadata.ScopeMap, error) { return store.GetScopeMap(ctx, req.registry, req.name) },
				func() error { return errScopeMapNotFound(req.name) }, userJSON)
		},
		del: func(w http.ResponseWriter, req *request) error {
			err := store.DeleteScopeMap(ctx, req.registry, req.name)
			if errors.Is(err, metadata.ErrConflict) {
				return &apiError{Status: http.StatusConflict, Code: "ScopeMapInUse", Message: "The scope map " + req.name + " is used by tokens: change or delete them first."}
			}
			return writeDeleted(w, err, nil)
		},
		write: func(w http.ResponseWriter, req *request, patch bool) error {
			return h.writeScopeMap(w, req, store, patch)
		},
	})
}

// writeScopeMap serves PUT and PATCH of a user-defined scope map.
func (h *Handler) writeScopeMap(w http.ResponseWriter, req *request, store AccessStore, patch bool) error {
	ctx := req.r.Context()
	var body struct {
		Properties struct {
			Description opt[string]   `json:"description"`
			Actions     opt[[]string] `json:"actions"`
		} `json:"properties"`
	}
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	m, err := store.GetScopeMap(ctx, req.registry, req.name)
	exists := err == nil
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return err
	}
	if patch && !exists {
		return errScopeMapNotFound(req.name)
	}
	if !exists {
		m = metadata.ScopeMap{Name: req.name}
		if !body.Properties.Actions.value() {
			return errBadRequest("InvalidRequestContent", "properties.actions is required.")
		}
	}
	if body.Properties.Description.Set {
		m.Description = body.Properties.Description.V
	}
	if len(m.Description) > 256 {
		return errBadRequest("InvalidRequestContent", "The description must be at most 256 characters.")
	}
	if body.Properties.Actions.Set {
		acts := make([]string, 0, len(body.Properties.Actions.V))
		for _, a := range body.Properties.Actions.V {
			acts = append(acts, strings.ToLower(strings.TrimSpace(a)))
		}
		if _, err := auth.ParseScopeMapActions(acts); err != nil {
			return errBadRequest("InvalidScopeMapActions", "Invalid scope map actions: "+err.Error()+".")
		}
		m.Actions = acts
	}
	created, err := store.PutScopeMap(ctx, req.registry, m)
	if err != nil {
		return err
	}
	if m, err = store.GetScopeMap(ctx, req.registry, req.name); err != nil {
		return err
	}
	writeJSON(w, writtenStatus(created), h.scopeMapJSON(req.registry, m, false))
	return nil
}

func (h *Handler) tokenJSON(reg string, tk metadata.Token) map[string]any {
	pw := []passwordJSON{}
	for _, p := range tk.Passwords {
		pw = append(pw, passwordJSON{Name: p.Name, CreationTime: timeJSON(p.Created), Expiry: timeJSON(p.Expiry)})
	}
	var scopeMapID any
	if tk.ScopeMap != "" {
		scopeMapID = h.resourceID(reg, "scopeMaps", tk.ScopeMap)
	}
	return map[string]any{
		"id": h.resourceID(reg, "tokens", tk.Name), "name": tk.Name, "type": typeToken,
		"properties": map[string]any{"creationDate": timeJSON(tk.Created), "provisioningState": rules.StateSucceeded,
			"scopeMapId": scopeMapID, "status": tk.Status,
			"credentials": map[string]any{"certificates": []any{}, "passwords": pw}},
	}
}

func errTokenNotFound(name string) error {
	return errNotFound("ResourceNotFound", "The token "+name+" could not be found.")
}

// childName returns the name in a full resource ID of kind under this
// registry (scopeMapId, tokenId).
func (h *Handler) childName(reg, kind, id string) (string, bool) {
	prefix := h.registryID(reg) + "/" + kind + "/"
	if len(id) <= len(prefix) || !strings.EqualFold(id[:len(prefix)], prefix) || strings.Contains(id[len(prefix):], "/") {
		return "", false
	}
	return id[len(prefix):], true
}

func (h *Handler) tokens(w http.ResponseWriter, req *request) error {
	store, err := h.access()
	if err != nil {
		return err
	}
	ctx := req.r.Context()
	toJSON := func(tk metadata.Token) any { return h.tokenJSON(req.registry, tk) }
	return h.serveResource(w, req, resourceOps{noun: "token",
		list: func(w http.ResponseWriter, req *request) error {
			all, err := store.ListTokens(ctx, req.registry)
			if err != nil {
				return err
			}
			serveList(w, all, toJSON)
			return nil
		},
		get: func(w http.ResponseWriter, req *request) error {
			return serveOne(w, func() (metadata.Token, error) { return store.GetToken(ctx, req.registry, req.name) },
				func() error { return errTokenNotFound(req.name) }, toJSON)
		},
		del: func(w http.ResponseWriter, req *request) error {
			return writeDeleted(w, store.DeleteToken(ctx, req.registry, req.name), func() error {
				return store.RevokeRefreshTokens(ctx, req.registry, auth.KindToken, req.name)
			})
		},
		write: func(w http.ResponseWriter, req *request, patch bool) error { return h.writeToken(w, req, store, patch) },
	})
}

// writeToken serves PUT and PATCH of a token.
func (h *Handler) writeToken(w http.ResponseWriter, req *request, store AccessStore, patch bool) error {
	ctx := req.r.Context()
	var body struct {
		Properties struct {
			ScopeMapID  opt[string] `json:"scopeMapId"`
			Status      opt[string] `json:"status"`
			Credentials opt[struct {
				Passwords []struct {
					Name string `json:"name"`
				} `json:"passwords"`
			}] `json:"credentials"`
		} `json:"properties"`
	}
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	p := body.Properties
	scopeMap := ""
	if p.ScopeMapID.value() {
		name, ok := h.childName(req.registry, "scopeMaps", p.ScopeMapID.V)
		if !ok {
			return errBadRequest("InvalidScopeMapId", "scopeMapId must be the ID of a scope map of this registry: "+h.resourceID(req.registry, "scopeMaps", "<name>")+".")
		}
		if sm, ok := systemScopeMap(name); ok {
			scopeMap = sm.Name
		} else if m, err := store.GetScopeMap(ctx, req.registry, name); errors.Is(err, metadata.ErrNotFound) {
			return errBadRequest("ScopeMapNotFound", "The scope map "+name+" does not exist.")
		} else if err != nil {
			return err
		} else {
			scopeMap = m.Name
		}
	}
	status := ""
	if p.Status.value() {
		if status = canonical(p.Status.V, auth.StatusEnabled, auth.StatusDisabled); status == "" {
			return errBadRequest("InvalidRequestContent", "status must be enabled or disabled.")
		}
	}
	var revoke bool
	created, err := store.UpdateToken(ctx, req.registry, req.name, func(tk *metadata.Token, created bool) error {
		if created && patch {
			return errTokenNotFound(req.name)
		}
		if p.ScopeMapID.Set {
			tk.ScopeMap = scopeMap // null disassociates, as az token update without --scope-map
		}
		if status != "" {
			revoke = status == auth.StatusDisabled && tk.Status != auth.StatusDisabled
			tk.Status = status
		}
		if tk.Status == "" {
			tk.Status = auth.StatusEnabled
		}
		if p.Credentials.value() && !created {
			// The passwords named are kept; the others are deleted (az
			// token credential delete).
			keep := tk.Passwords[:0]
			for _, pw := range tk.Passwords {
				for _, n := range p.Credentials.V.Passwords {
					if strings.EqualFold(n.Name, pw.Name) {
						keep = append(keep, pw)
						break
					}
				}
			}
			tk.Passwords = keep
		}
		return nil
	})
	if err != nil {
		return err
	}
	if revoke {
		if err := store.RevokeRefreshTokens(ctx, req.registry, auth.KindToken, req.name); err != nil {
			return err
		}
	}
	tk, err := store.GetToken(ctx, req.registry, req.name)
	if err != nil {
		return err
	}
	writeJSON(w, writtenStatus(created), h.tokenJSON(req.registry, tk))
	return nil
}

var tokenPasswordNames = []string{"password1", "password2"}

// generateCredentials serves POST .../generateCredentials: new passwords
// for a token (both, or the one named), returned once.
func (h *Handler) generateCredentials(w http.ResponseWriter, req *request) error {
	if req.r.Method != http.MethodPost {
		return errMethod(req.r)
	}
	store, err := h.access()
	if err != nil {
		return err
	}
	var body struct {
		TokenID string    `json:"tokenId"`
		Expiry  time.Time `json:"expiry"`
		Name    string    `json:"name"`
	}
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	name, ok := h.childName(req.registry, "tokens", body.TokenID)
	if !ok {
		return errBadRequest("InvalidTokenId", "tokenId must be the ID of a token of this registry: "+h.resourceID(req.registry, "tokens", "<name>")+".")
	}
	names := tokenPasswordNames
	if body.Name != "" {
		n := canonical(body.Name, tokenPasswordNames...)
		if n == "" {
			return errBadRequest("InvalidRequestContent", "name must be password1 or password2.")
		}
		names = []string{n}
	}
	if !body.Expiry.IsZero() && !body.Expiry.After(h.opts.Now()) {
		return errBadRequest("InvalidRequestContent", "expiry must be in the future.")
	}
	now := h.opts.Now().UTC()
	var out []passwordJSON
	var tokenName string
	_, err = store.UpdateToken(req.r.Context(), req.registry, name, func(tk *metadata.Token, created bool) error {
		if created {
			return errTokenNotFound(name)
		}
		tokenName = tk.Name
		for _, n := range names {
			v, hash, err := newPassword()
			if err != nil {
				return err
			}
			np := metadata.TokenPassword{Name: n, Hash: hash, Created: now, Expiry: body.Expiry.UTC()}
			replaced := false
			for i := range tk.Passwords {
				if tk.Passwords[i].Name == n {
					tk.Passwords[i], replaced = np, true
				}
			}
			if !replaced {
				tk.Passwords = append(tk.Passwords, np)
			}
			out = append(out, passwordJSON{Name: n, Value: v, CreationTime: timeJSON(now), Expiry: timeJSON(np.Expiry)})
		}
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"username": tokenName, "passwords": out})
	return nil
}

// checkNameAvailability serves POST .../checkNameAvailability.
func (h *Handler) checkNameAvailability(w http.ResponseWriter, req *request) error {
	if req.r.Method != http.MethodPost {
		return errMethod(req.r)
	}
	var body struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := readBody(req.r, &body); err != nil {
		return err
	}
	if !strings.EqualFold(body.Type, typeRegistry) {
		return errBadRequest("InvalidRequestContent", "type must be "+typeRegistry+".")
	}
	if !rules.ValidRegistryName(body.Name) {
		writeJSON(w, http.StatusOK, map[string]any{"nameAvailable": false, "reason": "Invalid",
			"message": "The registry name must be 5 to 50 alphanumeric characters."})
		return nil
	}
	if _, ok := h.opts.Registries.Lookup(body.Name); ok {
		writeJSON(w, http.StatusOK, map[string]any{"nameAvailable": false, "reason": "AlreadyExists",
			"message": "The registry " + body.Name + " is already in use."})
		return nil
	}
	writeJSON(w, http.StatusOK, map[string]any{"nameAvailable": true})
	return nil
}
