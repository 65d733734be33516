package portal

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/arcacache/arca/internal/metadata"
)

const (
	cookieName = "arca_portal"
	// sessionIdle ends a session nobody used for this long.
	sessionIdle = 8 * time.Hour
	// touchEvery is how stale a session's recorded last use may get before
	// a request writes it again: one write a minute, not one a request.
	touchEvery = time.Minute
)

// SessionStore keeps the portal's sessions, shared by every replica.
type SessionStore interface {
	PutPortalSession(ctx context.Context, p metadata.PortalSession) error
	GetPortalSession(ctx context.Context, idHash string) (metadata.PortalSession, error)
	TouchPortalSession(ctx context.Context, idHash string, at time.Time) error
	DeletePortalSession(ctx context.Context, idHash string) error
	PrunePortalSessions(ctx context.Context, cutoff time.Time) (int, error)
}

// Identities resolves who signed in, so that a session keeps the
// principal rather than its token, and carries that principal into the
// in-process management API calls (mgmt.Principals).
type Identities interface {
	// Identify returns the principal a management token authenticates and
	// a stamp of its secret (ok false for an unknown token).
	Identify(ctx context.Context, token string) (principal, stamp string, ok bool, err error)
	// WithSession returns ctx carrying that principal for the API handler.
	WithSession(ctx context.Context, principal, stamp string) context.Context
}

// session is a signed-in browser. The browser holds only the random
// session ID in an HttpOnly cookie; the store holds the ID's SHA-256, the
// principal that signed in and the CSRF token, never the bearer token.
type session struct {
	idHash    string
	principal string
	stamp     string
	csrf      string
}

// sessions is the session table in the metadata store: a browser signed
// in on one replica is signed in on every replica, and a sign-out on one
// ends it on all (each request reads the row; nothing is cached).
type sessions struct {
	store SessionStore
	now   func() time.Time
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func hashID(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// start records a new session for principal and sets its cookie; it
// prunes the sessions idle too long first, so the table stays small.
func (s *sessions) start(w http.ResponseWriter, r *http.Request, principal, stamp string) error {
	ctx := r.Context()
	now := s.now()
	if _, err := s.store.PrunePortalSessions(ctx, now.Add(-sessionIdle)); err != nil {
		return err
	}
	id := randomID()
	if err := s.store.PutPortalSession(ctx, metadata.PortalSession{IDHash: hashID(id), Principal: principal, Stamp: stamp,
		CSRF: randomID(), Created: now, LastUsed: now}); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/portal/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return nil
}

// get returns the request's live session, or false.
func (s *sessions) get(r *http.Request) (session, bool, error) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return session{}, false, nil
	}
	ctx := r.Context()
	id := hashID(c.Value)
	row, err := s.store.GetPortalSession(ctx, id)
	if errors.Is(err, metadata.ErrNotFound) {
		return session{}, false, nil
	}
	if err != nil {
		return session{}, false, err
	}
	now := s.now()
	if now.Sub(row.LastUsed) > sessionIdle {
		return session{}, false, s.store.DeletePortalSession(ctx, id)
	}
	if now.Sub(row.LastUsed) > touchEvery {
		if err := s.store.TouchPortalSession(ctx, id, now); err != nil {
			return session{}, false, err
		}
	}
	return session{idHash: id, principal: row.Principal, stamp: row.Stamp, csrf: row.CSRF}, true, nil
}

// end deletes the request's session and clears its cookie.
func (s *sessions) end(w http.ResponseWriter, r *http.Request) error {
	var err error
	if c, cerr := r.Cookie(cookieName); cerr == nil {
		err = s.store.DeletePortalSession(r.Context(), hashID(c.Value))
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/portal/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return err
}

// csrfOK checks the form's CSRF token against the session's.
func csrfOK(se session, r *http.Request) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(se.csrf)) == 1
}

// loginCookie holds the sign-in form's CSRF token (double submit: there is
// no session yet to keep it in).
const loginCookie = "arca_portal_login"

// loginCSRF sets a fresh sign-in CSRF token in its cookie and returns it
// for the form.
func loginCSRF(w http.ResponseWriter, r *http.Request) string {
	t := randomID()
	http.SetCookie(w, &http.Cookie{Name: loginCookie, Value: t, Path: "/portal/signin", MaxAge: int(sessionIdle.Seconds()),
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	return t
}

// loginCSRFOK checks the sign-in form's token against its cookie.
func loginCSRFOK(r *http.Request) bool {
	c, err := r.Cookie(loginCookie)
	got := r.PostFormValue("csrf")
	return err == nil && got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(c.Value)) == 1
}
