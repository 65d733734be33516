package mgmt

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/armtime"
	"github.com/arcacache/arca/internal/auth"
	"github.com/arcacache/arca/internal/metadata"
)

// Management roles. Owner, Contributor and Reader are ARM's; AcrPull,
// AcrPush and AcrDelete are ACR's registry-scoped data roles, which give
// no management access.
const (
	RoleOwner       = "Owner"
	RoleContributor = "Contributor"
	RoleReader      = "Reader"
	RoleAcrPull     = "AcrPull"
	RoleAcrPush     = "AcrPush"
	RoleAcrDelete   = "AcrDelete"
)

// Roles lists the roles a principal may hold.
var Roles = []string{RoleOwner, RoleContributor, RoleReader, RoleAcrPull, RoleAcrPush, RoleAcrDelete}

// AdminPrincipal is the principal of the admin token (ARCA_ADMIN_TOKEN or
// the one generated at first start): an Owner.
const AdminPrincipal = "admin"

// legacyAdminTokenFile is where earlier versions kept the SHA-256 of a
// generated admin token; it is imported into the metadata store once.
const legacyAdminTokenFile = "admin-token.sha256"

// PrincipalStore keeps management identities and the audit log.
type PrincipalStore interface {
	GetPrincipal(ctx context.Context, name string) (metadata.Principal, error)
	ListPrincipals(ctx context.Context) ([]metadata.Principal, error)
	PutPrincipal(ctx context.Context, p metadata.Principal) error
	DeletePrincipal(ctx context.Context, name string) error
	AddAudit(ctx context.Context, e metadata.AuditEntry) error
	ListAudit(ctx context.Context, since time.Time, n int) ([]metadata.AuditEntry, error)
	// Failed attempts are counted where every replica sees them.
	auth.FailureStore
}

// Caller is an authenticated management caller.
type Caller struct {
	Name     string
	Role     string
	Registry string // "" = every registry
}

// Principals authenticates management secrets (bearer tokens): the admin
// token and the tokens of principals created through the API. Secrets are
// kept as salted SHA-256 in the metadata store, so every replica shares
// them; failed attempts are throttled per source address.
type Principals struct {
	store    PrincipalStore
	throttle *auth.Throttle
	now      func() time.Time
}

// NewPrincipals returns a Principals over store.
func NewPrincipals(store PrincipalStore, now func() time.Time) (*Principals, error) {
	if store == nil {
		return nil, errors.New("mgmt: principals need a store")
	}
	if now == nil {
		now = time.Now
	}
	throttle := auth.NewThrottle(auth.DefaultMaxFailures, auth.DefaultFailureWindow, now)
	throttle.Share(store, "management", nil)
	return &Principals{store: store, throttle: throttle, now: now}, nil
}

// principalTokenPrefix starts generated principal tokens: the name
// follows up to "_", so a token names its principal.
const principalTokenPrefix = "arcam_"

var principalNameRe = regexp.MustCompile(`^[a-zA-Z0-9-]{3,50}$`)

func hashSecret(salt []byte, secret string) []byte {
	h := sha256.New()
	h.Write(salt)
	h.Write([]byte(secret))
	return h.Sum(nil)
}

func newPrincipal(name, role, registry, secret string) (metadata.Principal, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return metadata.Principal{}, fmt.Errorf("principal: %w", err)
	}
	return metadata.Principal{Name: name, Role: role, Registry: strings.ToLower(registry), Salt: salt, Hash: hashSecret(salt, secret)}, nil
}

// SetAdminToken makes token the admin principal's secret (ARCA_ADMIN_TOKEN
// at start). It must have at least 128 bits of entropy.
func (p *Principals) SetAdminToken(ctx context.Context, token string) error {
	if err := auth.CheckSecretStrength(token); err != nil {
		return fmt.Errorf("admin token: %w", err)
	}
	// Kept as it is when it already matches (salted: an imported legacy
	// hash is replaced): every replica sets it at start, and a new salt
	// would end every portal session of the admin.
	cur, err := p.store.GetPrincipal(ctx, AdminPrincipal)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return fmt.Errorf("admin token: %w", err)
	}
	if err == nil && len(cur.Salt) > 0 && cur.Role == RoleOwner && cur.Registry == "" &&
		subtle.ConstantTimeCompare(hashSecret(cur.Salt, token), cur.Hash) == 1 {
		return nil
	}
	pr, err := newPrincipal(AdminPrincipal, RoleOwner, "", token)
	if err != nil {
		return err
	}
	return p.store.PutPrincipal(ctx, pr)
}

// EnsureAdmin makes sure an admin principal exists: it is kept, imported
// from an earlier version's hash file in dataDir, or generated (the new
// token is returned, once; "" otherwise). store is called to save a
// generated one, so a start that fails before it leaves no token nobody saw.
func (p *Principals) EnsureAdmin(ctx context.Context, dataDir string) (token string, store func() error, err error) {
	if _, err := p.store.GetPrincipal(ctx, AdminPrincipal); err == nil {
		return "", nil, nil
	} else if !errors.Is(err, metadata.ErrNotFound) {
		return "", nil, err
	}
	if b, err := os.ReadFile(filepath.Join(dataDir, legacyAdminTokenFile)); err == nil {
		h, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(h) != sha256.Size {
			return "", nil, fmt.Errorf("admin token file %s is corrupt (delete it to generate a new token)", legacyAdminTokenFile)
		}
		// Unsalted, as it was written; the next configured or generated
		// token replaces it.
		return "", nil, p.store.PutPrincipal(ctx, metadata.Principal{Name: AdminPrincipal, Role: RoleOwner, Salt: []byte{}, Hash: h})
	}
	secret, err := auth.GenerateSecret()
	if err != nil {
		return "", nil, err
	}
	token = "arca_" + secret
	pr, err := newPrincipal(AdminPrincipal, RoleOwner, "", token)
	if err != nil {
		return "", nil, err
	}
	return token, func() error { return p.store.PutPrincipal(ctx, pr) }, nil
}

var errAuthMissing = &apiError{Status: http.StatusUnauthorized, Code: "AuthenticationFailed",
	Message: "Authentication failed. The 'Authorization' header is missing."}

// Authenticate checks a request's bearer token, or the session principal
// its context carries (WithSession).
func (p *Principals) Authenticate(r *http.Request) (Caller, error) {
	if s, ok := r.Context().Value(sessionKey{}).(sessionPrincipal); ok {
		return p.session(r.Context(), s)
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return Caller{}, errAuthMissing
	}
	scheme, token, ok := strings.Cut(h, " ")
	token = strings.TrimSpace(token)
	if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
		return Caller{}, &apiError{Status: http.StatusUnauthorized, Code: "AuthenticationFailed",
			Message: "Authentication failed. The 'Authorization' header is provided in an invalid format: use 'Bearer <token>'."}
	}
	remote := r.RemoteAddr
	if host, _, err := net.SplitHostPort(remote); err == nil {
		remote = host
	}
	// The cluster's count, read before the secret is checked.
	if until, blocked := p.throttle.Check(r.Context(), "ip:"+remote); blocked {
		return Caller{}, &apiError{Status: http.StatusTooManyRequests, Code: "TooManyRequests",
			Message: fmt.Sprintf("Too many failed authentication attempts from this address; retry after %s.", armtime.Format(until))}
	}
	c, ok, err := p.Verify(r.Context(), token)
	if err != nil {
		return Caller{}, err
	}
	if !ok {
		p.throttle.Fail(r.Context(), "ip:"+remote)
		_ = p.store.AddAudit(r.Context(), metadata.AuditEntry{At: armtime.Of(p.now()), Who: "-", Action: "authenticate", Resource: "management", Result: "invalid token", Remote: remote})
		return Caller{}, &apiError{Status: http.StatusUnauthorized, Code: "InvalidAuthenticationToken",
			Message: "The access token is invalid: it is not a management token of this server."}
	}
	return c, nil
}

// Verify checks a management token (the data plane uses it too).
func (p *Principals) Verify(ctx context.Context, token string) (Caller, bool, error) {
	name := AdminPrincipal
	if rest, ok := strings.CutPrefix(token, principalTokenPrefix); ok {
		if n, _, ok := strings.Cut(rest, "_"); ok && principalNameRe.MatchString(n) {
			name = n
		}
	}
	pr, err := p.store.GetPrincipal(ctx, name)
	if errors.Is(err, metadata.ErrNotFound) {
		return Caller{}, false, nil
	}
	if err != nil {
		return Caller{}, false, err
	}
	if subtle.ConstantTimeCompare(hashSecret(pr.Salt, token), pr.Hash) != 1 {
		return Caller{}, false, nil
	}
	return Caller{Name: pr.Name, Role: pr.Role, Registry: pr.Registry}, true, nil
}

// Sessions: the web portal verifies a token once, at sign-in, and keeps
// who it authenticated (Identify) rather than the token; its later
// in-process calls of the handler carry that principal (WithSession).

// sessionKey is the context key of a session principal. Only code in this
// process can set it (nothing in a request's headers or body does).
type sessionKey struct{}

type sessionPrincipal struct{ name, stamp string }

// secretStamp identifies a principal's current secret without revealing
// it: a hash of its salted hash, which changes when the token does.
func secretStamp(pr metadata.Principal) string {
	h := sha256.New()
	h.Write([]byte("arca portal session\x00"))
	h.Write(pr.Salt)
	h.Write(pr.Hash)
	return hex.EncodeToString(h.Sum(nil))
}

// Identify returns the principal token authenticates and the stamp of its
// secret, what a session records instead of the token; ok is false for a
// token that is not a management token.
func (p *Principals) Identify(ctx context.Context, token string) (name, stamp string, ok bool, err error) {
	c, ok, err := p.Verify(ctx, token)
	if err != nil || !ok {
		return "", "", false, err
	}
	pr, err := p.store.GetPrincipal(ctx, c.Name)
	if err != nil {
		return "", "", false, fmt.Errorf("identify principal: %w", err)
	}
	return pr.Name, secretStamp(pr), true, nil
}

// WithSession returns ctx carrying principal name with stamp (from
// Identify) for an in-process call of the management handler. The handler
// checks on every call that the principal still exists with the same
// secret, and takes its role and registry as they are now.
func (p *Principals) WithSession(ctx context.Context, name, stamp string) context.Context {
	return context.WithValue(ctx, sessionKey{}, sessionPrincipal{name: name, stamp: stamp})
}

func (p *Principals) session(ctx context.Context, s sessionPrincipal) (Caller, error) {
	pr, err := p.store.GetPrincipal(ctx, s.name)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return Caller{}, err
	}
	if err != nil || subtle.ConstantTimeCompare([]byte(secretStamp(pr)), []byte(s.stamp)) != 1 {
		return Caller{}, &apiError{Status: http.StatusUnauthorized, Code: "InvalidAuthenticationToken",
			Message: "The session is no longer valid: its principal was deleted or its token changed. Sign in again."}
	}
	return Caller{Name: pr.Name, Role: pr.Role, Registry: pr.Registry}, nil
}

// access levels a management call needs.
const (
	levelNone     = iota // no decision: always refused
	levelSignedIn        // any authenticated caller
	levelRead            // reading
	levelWrite           // changes, and reading secrets
	levelOwner           // managing principals and identities
)

// allows reports whether c may make a call of level on registry ("" for
// calls above registries).
func (c Caller) allows(level int, registry string) bool {
	switch level {
	case levelNone:
		return false
	case levelSignedIn:
		return true
	}
	if c.Registry != "" && registry != "" && !strings.EqualFold(c.Registry, registry) {
		return false
	}
	switch c.Role {
	case RoleOwner:
		return c.Registry == "" || level < levelOwner
	case RoleContributor:
		return level <= levelWrite
	case RoleReader:
		return level == levelRead
	}
	return false
}

// sees reports whether c may see registry in lists.
func (c Caller) sees(registry string) bool {
	return c.Registry == "" || strings.EqualFold(c.Registry, registry)
}

// DataPerms are the data-plane permissions a role grants (ACR's legacy
// mode: Owner and Contributor everything, Reader pull).
func DataPerms(role string) auth.Perms {
	acts := map[string][]auth.Action{
		RoleOwner:       auth.AllActions,
		RoleContributor: auth.AllActions,
		RoleReader:      {auth.Pull, auth.MetadataRead},
		RoleAcrPull:     {auth.Pull, auth.MetadataRead},
		RoleAcrPush:     {auth.Pull, auth.Push, auth.MetadataRead, auth.MetadataWrite},
		RoleAcrDelete:   {auth.Delete},
	}[role]
	if len(acts) == 0 {
		return nil
	}
	return auth.Perms{{Pattern: "*", Actions: acts}}
}

// VerifyPrincipal implements auth.PrincipalLookup: a management token used
// as a data-plane password.
func (p *Principals) VerifyPrincipal(ctx context.Context, registry, secret string) (string, auth.Perms, bool, error) {
	c, ok, err := p.Verify(ctx, secret)
	if err != nil || !ok || !c.sees(registry) {
		return "", nil, false, err
	}
	return c.Name, DataPerms(c.Role), true, nil
}

// PrincipalPerms implements auth.PrincipalLookup: a principal's current
// data-plane permissions.
func (p *Principals) PrincipalPerms(ctx context.Context, registry, name string) (auth.Perms, bool, error) {
	pr, err := p.store.GetPrincipal(ctx, name)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	c := Caller{Name: pr.Name, Role: pr.Role, Registry: pr.Registry}
	if !c.sees(registry) {
		return nil, false, nil
	}
	return DataPerms(c.Role), true, nil
}

// principalJSON is a principal as the API shows it (never the secret's hash).
func principalJSON(pr metadata.Principal) map[string]any {
	return map[string]any{"name": pr.Name, "role": pr.Role, "registry": pr.Registry, "creationDate": timeJSON(pr.Created)}
}

// principals serves /arca/v1/principals[/{name}] (Owners only): list,
// PUT {"role","registry"} (a new secret, returned once) and DELETE.
func (h *Handler) principals(w http.ResponseWriter, req *request) error {
	r, c, name := req.r, req.caller, req.name
	ctx := r.Context()
	store := h.opts.Principals.store
	if name == "" {
		if r.Method != http.MethodGet {
			return errMethod(r)
		}
		all, err := store.ListPrincipals(ctx)
		if err != nil {
			return err
		}
		list := []map[string]any{}
		for _, pr := range all {
			list = append(list, principalJSON(pr))
		}
		writeJSON(w, http.StatusOK, map[string]any{"value": list})
		return nil
	}
	if !principalNameRe.MatchString(name) || strings.EqualFold(name, AdminPrincipal) {
		return errBadRequest("InvalidResourceName", "Principal names are 3 to 50 letters, digits and dashes, and not '"+AdminPrincipal+"' (set ARCA_ADMIN_TOKEN for that one).")
	}
	switch r.Method {
	case http.MethodGet:
		pr, err := store.GetPrincipal(ctx, name)
		if errors.Is(err, metadata.ErrNotFound) {
			return errNotFound("ResourceNotFound", "The principal "+name+" could not be found.")
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, principalJSON(pr))
		return nil
	case http.MethodDelete:
		err := store.DeletePrincipal(ctx, name)
		if errors.Is(err, metadata.ErrNotFound) {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		if err != nil {
			return err
		}
		h.auditCall(r, c, "delete", "principals/"+name, "deleted")
		w.WriteHeader(http.StatusOK)
		return nil
	case http.MethodPut:
	default:
		return errMethod(r)
	}
	var body struct {
		Role     string `json:"role"`
		Registry string `json:"registry"`
	}
	if err := readBody(r, &body); err != nil {
		return err
	}
	role := canonical(body.Role, Roles...)
	if role == "" {
		return errBadRequest("InvalidRole", "role must be one of "+strings.Join(Roles, ", ")+".")
	}
	if body.Registry != "" {
		reg, ok := h.opts.Registries.Lookup(body.Registry)
		if !ok {
			return errBadRequest("RegistryNotFound", "The registry "+body.Registry+" does not exist.")
		}
		body.Registry = reg.Name
	}
	secret, err := auth.GenerateSecret()
	if err != nil {
		return err
	}
	token := principalTokenPrefix + name + "_" + secret
	pr, err := newPrincipal(name, role, body.Registry, token)
	if err != nil {
		return err
	}
	if err := store.PutPrincipal(ctx, pr); err != nil {
		return err
	}
	if pr, err = store.GetPrincipal(ctx, name); err != nil {
		return err
	}
	h.auditCall(r, c, "put", "principals/"+name, "role "+role)
	out := principalJSON(pr)
	out["token"] = token
	writeJSON(w, http.StatusOK, out)
	return nil
}

func errForbidden(c Caller, r *http.Request) error {
	return &apiError{Status: http.StatusForbidden, Code: "AuthorizationFailed",
		Message: fmt.Sprintf("The client '%s' with role '%s' does not have authorization to perform %s %s.", c.Name, c.Role, r.Method, r.URL.Path)}
}

// Principals returns the handler's principals (the data plane lets them
// log in too).
func (h *Handler) Principals() *Principals { return h.opts.Principals }

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// auditCall records one management change: a log line and a row of the
// audit table (who, what, which resource, the result; never a secret).
func (h *Handler) auditCall(r *http.Request, c Caller, action, resource, result string) {
	remote := r.RemoteAddr
	if host, _, err := net.SplitHostPort(remote); err == nil {
		remote = host
	}
	h.log.Info("audit", "who", c.Name, "role", c.Role, "action", action, "resource", resource, "result", result, "remote", remote)
	e := metadata.AuditEntry{At: armtime.Of(h.opts.Now().UTC()), Who: c.Name, Action: action, Resource: resource, Result: result, Remote: remote}
	if err := h.opts.Principals.store.AddAudit(r.Context(), e); err != nil {
		h.log.Error("audit log write failed", "err", err)
	}
}

// auditLog serves GET /arca/v1/audit?since=RFC3339&top=N (Owners).
func (h *Handler) auditLog(w http.ResponseWriter, req *request) error {
	r := req.r
	since := time.Time{}
	if s := r.URL.Query().Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return errBadRequest("InvalidRequestContent", "since must be an RFC 3339 time.")
		}
		since = t
	}
	n := 1000
	if s := r.URL.Query().Get("top"); s != "" {
		if _, err := fmt.Sscanf(s, "%d", &n); err != nil || n <= 0 || n > 10000 {
			return errBadRequest("InvalidRequestContent", "top must be 1 to 10000.")
		}
	}
	list, err := h.opts.Principals.store.ListAudit(r.Context(), since, n)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"value": list})
	return nil
}
