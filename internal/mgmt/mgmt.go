// Package mgmt is arca's management plane: an ARM-compatible REST API
// (the shape of Microsoft.ContainerRegistry's cacheRules and credentialSets,
// so the Azure SDKs and az-style tools drive it unmodified) and a small
// info endpoint for arca's own CLI. Every call needs the admin token.
package mgmt

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/rules"
)

// Store is where the management plane keeps its resources.
type Store interface {
	UpdateRules(ctx context.Context, registry string, fn func(metadata.RulesTx) error) error
	GetCacheRule(ctx context.Context, registry, name string) (rules.Rule, error)
	ListCacheRulesPage(ctx context.Context, registry, after string, n int) ([]rules.Rule, bool, error)
	GetCredentialSet(ctx context.Context, registry, name string) (rules.CredentialSet, error)
	ListCredentialSetsPage(ctx context.Context, registry, after string, n int) ([]rules.CredentialSet, bool, error)
	PutOperation(ctx context.Context, op metadata.Operation) error
	GetOperation(ctx context.Context, id string) (metadata.Operation, error)
	LatestOperation(ctx context.Context, registry, kind string) (metadata.Operation, error)
}

// RateLimitStore reads recorded upstream rate limits.
type RateLimitStore interface {
	GetRateLimit(ctx context.Context, source string) (metadata.RateLimit, error)
}

// Defaults for Options.
const (
	DefaultSubscriptionID = "00000000-0000-0000-0000-000000000000"
	DefaultResourceGroup  = "arca"
	DefaultTenantID       = "00000000-0000-0000-0000-000000000000"
	DefaultLocation       = "local"
	DefaultPageSize       = 100
	maxBody               = 1 << 20
)

// Options configure a Handler.
type Options struct {
	// SubscriptionID and ResourceGroup are the names that appear in resource
	// IDs; requests under other values get ARM's 404.
	SubscriptionID string
	ResourceGroup  string
	// TenantID is reported in credential sets' system-assigned identity.
	TenantID string
	// Location names the region in operationResults URLs.
	Location string
	// ExternalURL is the base of the URLs arca hands out (Azure-AsyncOperation,
	// Location, nextLink). Empty: derived from each request's Host and TLS.
	ExternalURL string
	Registries  *Registries
	Store       Store
	// Principals authenticates callers (admin token, principals' tokens).
	Principals *Principals
	// Checker computes credentialHealth (nil: always Unhealthy "not checked").
	Checker CredentialChecker
	// CheckTimeout bounds one credential check. Default 30s.
	CheckTimeout time.Duration
	// Health stores re-checked credential health (nil: Store, when it can).
	Health HealthStore
	// HealthMaxAge and HealthInterval time the re-checks (health.go).
	HealthMaxAge, HealthInterval time.Duration
	// ValidateSecretRef checks a secret reference's syntax (nil: any non-empty string).
	ValidateSecretRef func(string) error
	// MaxRules per registry; <= 0 means rules.DefaultMaxRules.
	MaxRules int
	// PageSize of list responses; <= 0 means DefaultPageSize.
	PageSize int
	// OnChange, if set, is called after a registry's rules or credential
	// sets changed (this replica's data plane refreshes at once).
	OnChange func(registry string)
	// RateLimits, if set, supplies the upstream pull budget last reported
	// for a credential set (or anonymous pulls) on a login server, shown by
	// GET of a cache rule or credential set.
	RateLimits RateLimitStore
	// UpstreamHealth, if set, reports how the data plane sees the host of
	// a login server (shown by GET of a cache rule).
	UpstreamHealth func(loginServer string) UpstreamHealth
	// Syncer serves the estimate and on-demand sync endpoints (nil: 501).
	Syncer Syncer
	// GC runs garbage collection on demand (nil: 501); Retention keeps
	// retention policies (nil: PATCHing one answers 501).
	GC        GarbageCollector
	Retention RetentionStore
	// Access keeps registry settings, scope maps and tokens (nil: those
	// resources answer 501).
	Access AccessStore
	// OnAccessChange, if set, is called after a registry's settings
	// changed (the data plane drops what it cached).
	OnAccessChange func(registry string)
	// IdentityChecker, if set, reports on GET of a cache rule whether its
	// identity can pull from the upstream.
	IdentityChecker IdentityChecker
	// Identities keeps user-assigned identities and role assignments (nil:
	// those resources answer 501).
	Identities IdentityStore
	// Backup serves /arca/v1/backup/ (nil: 404); snapshots are staged in
	// BackupTempDir (the system's temporary directory when empty).
	Backup BackupSource
	// NoBackup, when Backup is nil, says why (and what to use instead).
	NoBackup      string
	BackupTempDir string
	// KeyVault lists Key Vault secrets for POST listKeyVaultSecrets, the
	// portal's picker (nil: 501).
	KeyVault KeyVaultLister
	// Lifecycle serves listUsages and cache rule purges (nil: 501).
	Lifecycle Lifecycle
	Logger    *slog.Logger
	Now       func() time.Time
}

// Handler serves the management API.
type Handler struct {
	opts   Options
	log    *slog.Logger
	health *healthChecks
	ops    operations
}

// New returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Registries == nil || opts.Store == nil || opts.Principals == nil {
		return nil, errors.New("mgmt: Registries, Store and Principals are required")
	}
	if opts.SubscriptionID == "" {
		opts.SubscriptionID = DefaultSubscriptionID
	}
	if opts.ResourceGroup == "" {
		opts.ResourceGroup = DefaultResourceGroup
	}
	if opts.TenantID == "" {
		opts.TenantID = DefaultTenantID
	}
	if opts.Location == "" {
		opts.Location = DefaultLocation
	}
	if opts.ExternalURL != "" {
		u, err := url.Parse(opts.ExternalURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, errors.New("mgmt: external URL must be http(s)://host[:port][/path]")
		}
		opts.ExternalURL = strings.TrimSuffix(opts.ExternalURL, "/")
	}
	if opts.Checker == nil {
		opts.Checker = notChecked{}
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = 30 * time.Second
	}
	if opts.Health == nil {
		hs, ok := opts.Store.(HealthStore)
		if !ok {
			return nil, errors.New("mgmt: Health is required when Store cannot store credential health")
		}
		opts.Health = hs
	}
	if opts.HealthMaxAge <= 0 {
		opts.HealthMaxAge = DefaultHealthMaxAge
	}
	if opts.HealthInterval <= 0 {
		opts.HealthInterval = DefaultHealthInterval
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{opts: opts, log: opts.Logger}
	h.ops.ctx, h.ops.cancel = context.WithCancel(context.Background())
	h.health = newHealthChecks(h)
	return h, nil
}

// kindRegistryOperation is the kind of GET registries/R/operationStatuses/ID
// (an operation on the registry itself, such as garbage collection).
const kindRegistryOperation = "operationStatuses"

// request is one parsed management call.
type request struct {
	r        *http.Request
	v        apiVersion
	registry string // lower-case registry name
	kind     string // "cacheRules", "credentialSets", kindRegistryOperation, ... or ""
	name     string // resource name, "" for a collection
	opID     string // operationStatuses / operationResults ID
	caller   Caller
}

// ServeHTTP authenticates, checks the api-version and routes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	reqID := uuid.NewString()
	w.Header().Set("x-ms-request-id", reqID)
	corr := r.Header.Get("x-ms-correlation-request-id")
	if corr == "" {
		corr = reqID
	}
	w.Header().Set("x-ms-correlation-request-id", corr)
	sw := &statusWriter{ResponseWriter: w}
	var c Caller
	err := h.serve(sw, r, &c)
	defer func() {
		if r.Method != http.MethodGet && c.Name != "" {
			h.auditCall(r, c, r.Method, r.URL.Path, http.StatusText(sw.status))
		}
	}()
	if err == nil {
		return
	}
	ae, internal := toAPIError(err)
	if internal {
		h.log.Error("management request failed", "method", r.Method, "path", r.URL.Path, "request_id", reqID, "err", err)
	} else {
		h.log.Info("management request rejected", "method", r.Method, "path", r.URL.Path, "status", ae.Status, "code", ae.Code)
	}
	writeError(w, ae)
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request, caller *Caller) error {
	c, err := h.opts.Principals.Authenticate(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="arca", error="invalid_token"`)
		return err
	}
	*caller = c
	seg := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(seg) >= 3 && seg[0] == "arca" && seg[1] == "v1" {
		switch {
		case len(seg) == 3 && seg[2] == "info":
			if r.Method != http.MethodGet {
				return errMethod(r)
			}
			return h.info(w, c)
		case seg[2] == "principals" && len(seg) <= 4:
			return h.principals(w, r, c, strings.Join(seg[3:], ""))
		case len(seg) == 3 && seg[2] == "audit":
			return h.auditLog(w, r, c)
		case seg[2] == "backup":
			// The whole metadata store (secret hashes included): Owners
			// of every registry only.
			if !c.allows(levelOwner, "") {
				return errForbidden(c, r)
			}
			return h.backup(w, r, seg[3:])
		}
		return errNotFound("InvalidResourceType", "Unknown arca API path.")
	}
	if len(seg) >= 2 && eq(seg[0], "subscriptions") && eq(seg[1], h.opts.SubscriptionID) {
		if scope, name, ok := routeRoleAssignment(seg); ok {
			if err := identityAccess(c, r); err != nil {
				return err
			}
			return h.roleAssignments(w, r, scope, name)
		}
		if ir, ok := routeIdentity(seg[2:]); ok {
			if err := identityAccess(c, r); err != nil {
				return err
			}
			return h.identities(w, r, ir)
		}
	}
	q := r.URL.Query()
	_, present := q["api-version"]
	v, err := parseAPIVersion(q.Get("api-version"), present, h.opts.Location)
	if err != nil {
		return err
	}
	req, err := h.route(r, seg, v)
	if err != nil {
		return err
	}
	req.caller = c
	if !c.allows(callLevel(req), req.registry) {
		return errForbidden(c, r)
	}
	return h.dispatch(w, req)
}

func eq(a, b string) bool { return strings.EqualFold(a, b) }

// route parses the ARM path (segment names ignore case, as in ARM).
func (h *Handler) route(r *http.Request, seg []string, v apiVersion) (*request, error) {
	req := &request{r: r, v: v}
	if len(seg) < 2 || !eq(seg[0], "subscriptions") {
		return nil, errNotFound("InvalidResourceType", "The requested path is not an ARM resource path.")
	}
	if !eq(seg[1], h.opts.SubscriptionID) {
		return nil, errNotFound("SubscriptionNotFound", "The subscription '"+seg[1]+"' could not be found.")
	}
	// /subscriptions/{sub}/providers/Microsoft.ContainerRegistry/locations/{loc}/operationResults/{id}
	if len(seg) == 8 && eq(seg[2], "providers") && eq(seg[3], "Microsoft.ContainerRegistry") && eq(seg[4], "locations") && eq(seg[6], "operationResults") {
		req.opID = seg[7]
		return req, nil
	}
	// .../providers/Microsoft.ContainerRegistry/checkNameAvailability and
	// .../providers/Microsoft.ContainerRegistry/registries (by subscription)
	if len(seg) == 5 && eq(seg[2], "providers") && eq(seg[3], "Microsoft.ContainerRegistry") {
		switch {
		case eq(seg[4], "checkNameAvailability"):
			req.kind = "checkNameAvailability"
			return req, nil
		case eq(seg[4], "registries"):
			return req, nil
		}
	}
	if len(seg) < 4 || !eq(seg[2], "resourceGroups") {
		return nil, errNotFound("InvalidResourceType", "The resource type could not be found under subscription '"+seg[1]+"'.")
	}
	if !eq(seg[3], h.opts.ResourceGroup) {
		return nil, errNotFound("ResourceGroupNotFound", "Resource group '"+seg[3]+"' could not be found.")
	}
	if len(seg) < 7 || !eq(seg[4], "providers") || !eq(seg[5], "Microsoft.ContainerRegistry") || !eq(seg[6], "registries") {
		return nil, errNotFound("InvalidResourceType", "arca serves only Microsoft.ContainerRegistry/registries resources.")
	}
	if len(seg) == 7 {
		return req, nil // the registries collection
	}
	reg, ok := h.opts.Registries.Lookup(seg[7])
	rest := seg[8:]
	if !ok {
		if len(rest) == 0 && (r.Method == http.MethodPut || r.Method == http.MethodDelete) {
			req.registry = strings.ToLower(seg[7]) // create, or delete of nothing
			return req, nil
		}
		return nil, errNotFound("ResourceNotFound", "The Resource 'Microsoft.ContainerRegistry/registries/"+seg[7]+"' under resource group '"+seg[3]+"' was not found.")
	}
	req.registry = reg.Name
	switch {
	case len(rest) == 0:
	case len(rest) == 1 && eq(rest[0], "listUsages"):
		req.kind = "listUsages"
	case len(rest) == 1 && eq(rest[0], "checkCacheRuleArtifactSyncEstimate"):
		req.kind = "checkCacheRuleArtifactSyncEstimate"
	case len(rest) == 1 && eq(rest[0], "garbageCollect"):
		req.kind = "garbageCollect"
	case len(rest) == 1 && eq(rest[0], "listKeyVaultSecrets"):
		req.kind = "listKeyVaultSecrets"
	case len(rest) == 2 && eq(rest[0], "operationStatuses"):
		req.kind, req.opID = kindRegistryOperation, rest[1]
	case len(rest) == 1 && (eq(rest[0], "listCredentials") || eq(rest[0], "regenerateCredential") || eq(rest[0], "generateCredentials")):
		req.kind = map[string]string{"listcredentials": "listCredentials", "regeneratecredential": "regenerateCredential",
			"generatecredentials": "generateCredentials"}[strings.ToLower(rest[0])]
	case (eq(rest[0], "scopeMaps") || eq(rest[0], "tokens")) && len(rest) <= 2:
		req.kind = "scopeMaps"
		if eq(rest[0], "tokens") {
			req.kind = "tokens"
		}
		if len(rest) == 2 {
			req.name = rest[1]
		}
	case eq(rest[0], "cacheRules") || eq(rest[0], "credentialSets"):
		req.kind = "cacheRules"
		if eq(rest[0], "credentialSets") {
			req.kind = "credentialSets"
		}
		switch {
		case len(rest) == 1:
		case len(rest) == 2:
			req.name = rest[1]
		case len(rest) == 4 && eq(rest[2], "operationStatuses"):
			req.name, req.opID = rest[1], rest[3]
		case len(rest) == 3 && req.kind == "cacheRules" && eq(rest[2], "sync"):
			req.name, req.kind = rest[1], "sync"
		case len(rest) == 3 && req.kind == "cacheRules" && eq(rest[2], "purge"):
			req.name, req.kind = rest[1], "purge"
		default:
			return nil, errNotFound("InvalidResourceType", "Unknown path under "+req.kind+".")
		}
	default:
		return nil, errNotFound("InvalidResourceType", "The resource type '"+rest[0]+"' could not be found in the namespace 'Microsoft.ContainerRegistry' (arca serves cacheRules and credentialSets).")
	}
	return req, nil
}

func errMethod(r *http.Request) error {
	return &apiError{Status: http.StatusMethodNotAllowed, Code: "MethodNotAllowed",
		Message: "The HTTP method '" + r.Method + "' is not supported for this path."}
}

func (h *Handler) dispatch(w http.ResponseWriter, req *request) error {
	m := req.r.Method
	switch {
	case req.opID != "" && req.kind == "":
		if m != http.MethodGet {
			return errMethod(req.r)
		}
		return h.operationResult(w, req)
	case req.opID != "":
		if m != http.MethodGet {
			return errMethod(req.r)
		}
		return h.operationStatus(w, req)
	case req.kind == "checkCacheRuleArtifactSyncEstimate":
		if m != http.MethodPost {
			return errMethod(req.r)
		}
		return h.estimate(w, req)
	case req.kind == "sync":
		if m != http.MethodPost {
			return errMethod(req.r)
		}
		return h.syncNow(w, req)
	case req.kind == "purge":
		if m != http.MethodPost {
			return errMethod(req.r)
		}
		return h.purge(w, req)
	case req.kind == "listUsages":
		if m != http.MethodGet {
			return errMethod(req.r)
		}
		return h.listUsages(w, req)
	case req.kind == "checkNameAvailability":
		return h.checkNameAvailability(w, req)
	case req.kind == "garbageCollect":
		return h.garbageCollect(w, req)
	case req.kind == "listKeyVaultSecrets":
		return h.listKeyVaultSecrets(w, req)
	case req.kind == "listCredentials" || req.kind == "regenerateCredential":
		return h.adminCredentials(w, req)
	case req.kind == "generateCredentials":
		return h.generateCredentials(w, req)
	case req.kind == "scopeMaps":
		return h.scopeMaps(w, req)
	case req.kind == "tokens":
		return h.tokens(w, req)
	case req.registry != "" && req.kind == "":
		return h.registryResource(w, req)
	case req.registry == "":
		if m != http.MethodGet {
			return errMethod(req.r)
		}
		return h.getRegistries(w, req)
	case req.kind == "cacheRules":
		return h.cacheRules(w, req)
	default:
		return h.credentialSets(w, req)
	}
}

// baseURL is where clients reach this API: the configured external URL,
// or the request's own scheme and Host.
func (h *Handler) baseURL(r *http.Request) string {
	if h.opts.ExternalURL != "" {
		return h.opts.ExternalURL
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// info is GET /arca/v1/info, for arca's CLI: the registries the caller
// may see.
func (h *Handler) info(w http.ResponseWriter, c Caller) error {
	regs := []Registry{}
	for _, r := range h.opts.Registries.List() {
		if c.sees(r.Name) {
			regs = append(regs, r)
		}
	}
	writeJSON(w, http.StatusOK, struct {
		SubscriptionID  string     `json:"subscriptionId"`
		ResourceGroup   string     `json:"resourceGroup"`
		DefaultRegistry string     `json:"defaultRegistry"`
		Registries      []Registry `json:"registries"`
	}{h.opts.SubscriptionID, h.opts.ResourceGroup, h.opts.Registries.Default(), regs})
	return nil
}

// callLevel is the access a routed call needs: reading, or changing (and
// reading secrets, which listCredentials and generateCredentials return).
func callLevel(req *request) int {
	switch req.r.Method {
	case http.MethodGet:
		return levelRead
	case http.MethodPost:
		if req.kind == "checkNameAvailability" || req.kind == "checkCacheRuleArtifactSyncEstimate" {
			return levelRead
		}
	}
	return levelWrite
}

// getRegistries lists the registries (by resource group or subscription:
// arca has one of each).
func (h *Handler) getRegistries(w http.ResponseWriter, req *request) error {
	list := []map[string]any{}
	for _, reg := range h.opts.Registries.List() {
		if !req.caller.sees(reg.Name) {
			continue
		}
		v, err := h.registryView(req.r, reg)
		if err != nil {
			return err
		}
		list = append(list, v)
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": list})
	return nil
}

func (h *Handler) changed(registry string) {
	if h.opts.OnChange != nil {
		h.opts.OnChange(registry)
	}
}
