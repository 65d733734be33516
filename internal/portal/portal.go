// Package portal is arca's web portal, served under /portal/ by arca
// serve: cache rules, credential sets and statistics in the browser, the
// flow of the Azure portal's Cache and Credentials blades.
//
// It is server-rendered (html/template) with a little progressive
// JavaScript, all embedded: nothing to build, nothing fetched at run time.
// Every change is a form POST that the portal turns into a call of the
// management API handler in-process, with the session's identity, so the
// validation and the ARM error messages are the API's own; they are shown
// next to the field they concern. Sessions are server-side (the browser
// holds only an HttpOnly, SameSite=Strict cookie, Secure under TLS) and
// every POST carries the session's CSRF token.
package portal

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// Options configure a Handler.
type Options struct {
	// API is the management API handler; the portal calls it in-process.
	API http.Handler
	// Identities resolves who signs in and carries that principal into
	// the API calls of the session.
	Identities Identities
	// Sessions keeps the browser sessions (the metadata store: shared by
	// every replica).
	Sessions SessionStore
	// Stats is the time-bucketed history of the statistics page.
	Stats Stats
	// Repos, if set, serves the Repositories page.
	Repos Repos
	// Describer, with Repos, describes manifests stored before their
	// platform and image size were recorded (once: it records them).
	Describer Describer
	Logger    *slog.Logger
	Now       func() time.Time
}

// Handler serves the portal.
type Handler struct {
	opts     Options
	log      *slog.Logger
	sessions *sessions
	pages    map[string]*template.Template
	static   http.Handler
}

var pageNames = []string{"signin", "cache", "rule", "confirm", "credentials", "credential", "stats", "repos"}

// New returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.API == nil || opts.Identities == nil || opts.Sessions == nil || opts.Stats == nil {
		return nil, errors.New("portal: API, Identities, Sessions and Stats are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	h := &Handler{opts: opts, log: opts.Logger, sessions: &sessions{store: opts.Sessions, now: opts.Now}, pages: map[string]*template.Template{}}
	funcs := template.FuncMap{"bytes": humanBytes, "pct": pct, "tagConds": tagConds,
		// fe passes a form's errors and one field name to the field-error template.
		"fe": func(e formErrors, field string) any {
			return struct {
				Errors formErrors
				Field  string
			}{e, field}
		}}
	for _, p := range pageNames {
		t, err := template.New(p).Funcs(funcs).ParseFS(assets, "assets/layout.html", "assets/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("portal: template %s: %w", p, err)
		}
		h.pages[p] = t
	}
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		return nil, err
	}
	h.static = http.StripPrefix("/portal/static/", http.FileServerFS(static))
	return h, nil
}

// page is what every template gets.
type page struct {
	Title      string
	Nav        string
	CSRF       string
	Registry   string
	Registries []string
	Notice     string
	Error      string
	Data       any
}

// ctx is one signed-in request.
type ctx struct {
	context.Context
	w   http.ResponseWriter
	r   *http.Request
	se  session
	api *api
	reg string
	in  info
}

// ServeHTTP routes /portal/...; every route but sign-in and the static
// assets needs a session.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	p := strings.TrimPrefix(r.URL.Path, "/portal")
	switch {
	case strings.HasPrefix(p, "/static/"):
		h.static.ServeHTTP(w, r)
		return
	case p == "/signin":
		h.signin(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	se, ok, err := h.sessions.get(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !ok {
		if r.Method == http.MethodGet {
			http.Redirect(w, r, "/portal/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		http.Error(w, "not signed in", http.StatusUnauthorized)
		return
	}
	if r.Method == http.MethodPost && !csrfOK(se, r) {
		http.Error(w, "missing or wrong CSRF token: reload the page and try again", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	c, err := h.newCtx(w, r, se)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	seg := strings.Split(strings.Trim(p, "/"), "/")
	switch {
	case p == "/" || p == "":
		http.Redirect(w, r, "/portal/cache", http.StatusSeeOther)
	case p == "/signout" && r.Method == http.MethodPost:
		if err := h.sessions.end(w, r); err != nil {
			h.fail(w, r, err)
			return
		}
		http.Redirect(w, r, "/portal/signin", http.StatusSeeOther)
	case seg[0] == "cache":
		h.cache(c, seg[1:])
	case seg[0] == "credentials":
		h.credentials(c, seg[1:])
	case seg[0] == "stats" && len(seg) == 1:
		h.stats(c)
	case seg[0] == "repositories" && len(seg) == 1:
		h.repositories(c)
	default:
		http.NotFound(w, r)
	}
}

func (h *Handler) newCtx(w http.ResponseWriter, r *http.Request, se session) (*ctx, error) {
	a := &api{h: h.opts.API, ids: h.opts.Identities, principal: se.principal, stamp: se.stamp, remote: r.RemoteAddr}
	var in info
	if err := a.do(r.Context(), http.MethodGet, "/arca/v1/info", nil, &in); err != nil {
		return nil, err
	}
	// The registry asked for, else the default one, else the first the
	// caller may see (a registry-scoped principal sees one).
	reg := ""
	for _, want := range []string{r.URL.Query().Get("r"), in.DefaultRegistry} {
		for _, x := range in.Registries {
			if reg == "" && x.Name == want {
				reg = want
			}
		}
	}
	if reg == "" && len(in.Registries) > 0 {
		reg = in.Registries[0].Name
	}
	a.base = registryBase(in, reg)
	return &ctx{Context: r.Context(), w: w, r: r, se: se, api: a, reg: reg, in: in}, nil
}

// render writes template name with the common page fields filled in.
func (h *Handler) render(c *ctx, status int, name string, p page) {
	if c != nil {
		p.CSRF, p.Registry = c.se.csrf, c.reg
		for _, x := range c.in.Registries {
			p.Registries = append(p.Registries, x.Name)
		}
	}
	var w http.ResponseWriter
	if c != nil {
		w = c.w
	}
	h.write(w, status, name, p)
}

func (h *Handler) write(w http.ResponseWriter, status int, name string, p page) {
	var b strings.Builder
	if err := h.pages[name].ExecuteTemplate(&b, "layout", p); err != nil {
		h.log.Error("portal: rendering page", "page", name, "err", err)
		http.Error(w, "rendering the page failed; see the server log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// fail answers a request the API refused outside any form.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *armError
	if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
		// The principal was deleted or its token changed: the session
		// ends on every replica.
		if err := h.sessions.end(w, r); err != nil {
			h.log.Error("portal: ending a revoked session", "err", err)
		}
		http.Redirect(w, r, "/portal/signin", http.StatusSeeOther)
		return
	}
	status := http.StatusInternalServerError
	msg := "The request failed; see the server log."
	if errors.As(err, &ae) {
		status, msg = ae.Status, "("+ae.Code+") "+ae.Message
	} else {
		h.log.Error("portal request failed", "path", r.URL.Path, "err", err)
	}
	h.write(w, status, "confirm", page{Title: "Error", Error: msg})
}

// redirect answers a successful POST with a GET of path (post/redirect/get,
// so the back button and reloads do not resubmit), keeping the registry.
func (c *ctx) redirect(path, notice string) {
	q := url.Values{}
	if c.reg != c.in.DefaultRegistry {
		q.Set("r", c.reg)
	}
	if notice != "" {
		q.Set("notice", notice)
	}
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	http.Redirect(c.w, c.r, path, http.StatusSeeOther)
}

// signin serves the sign-in form and checks the token it posts by calling
// the API with it (so failed attempts are throttled and audited as the
// API's own); the only API call that carries the token.
func (h *Handler) signin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	next := r.FormValue("next")
	if !strings.HasPrefix(next, "/portal/") || strings.HasPrefix(next, "//") {
		next = "/portal/cache"
	}
	type form struct{ Next, CSRF string }
	switch r.Method {
	case http.MethodGet:
		h.write(w, http.StatusOK, "signin", page{Title: "Sign in", Data: form{next, loginCSRF(w, r)}})
	case http.MethodPost:
		// Login CSRF: without it another site could sign the browser in
		// with the attacker's token.
		if !loginCSRFOK(r) {
			http.Error(w, "missing or wrong CSRF token: reload the sign-in page and try again", http.StatusForbidden)
			return
		}
		token := strings.TrimSpace(r.PostFormValue("token"))
		a := &api{h: h.opts.API, token: token, remote: r.RemoteAddr}
		var in info
		if err := a.do(r.Context(), http.MethodGet, "/arca/v1/info", nil, &in); err != nil {
			msg := "Sign-in failed."
			var ae *armError
			if errors.As(err, &ae) {
				msg = "(" + ae.Code + ") " + ae.Message
			}
			h.write(w, http.StatusUnauthorized, "signin", page{Title: "Sign in", Error: msg, Data: form{next, r.PostFormValue("csrf")}})
			return
		}
		// The API accepted the token; the session keeps who it is, not it.
		principal, stamp, ok, err := h.opts.Identities.Identify(r.Context(), token)
		if err == nil && !ok {
			err = errors.New("portal: the token the API accepted does not identify a principal")
		}
		if err == nil {
			err = h.sessions.start(w, r, principal, stamp)
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
		h.log.Info("portal sign-in", "principal", principal, "remote", r.RemoteAddr)
		http.Redirect(w, r, next, http.StatusSeeOther)
	default:
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

func humanBytes(n float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for n >= 1024 && i < len(units)-1 {
		n /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", n)
	}
	return fmt.Sprintf("%.1f %s", n, units[i])
}

func pct(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*a/b)
}
