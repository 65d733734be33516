package portal

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"
)

const (
	cookieName = "arca_portal"
	// sessionIdle ends a session nobody used for this long.
	sessionIdle = 8 * time.Hour
)

// session is a signed-in browser. The bearer token stays on the server:
// the browser holds only the random session ID in an HttpOnly cookie.
type session struct {
	token    string
	csrf     string
	lastUsed time.Time
}

// sessions is the in-memory session table (a restart signs everyone out).
type sessions struct {
	mu  sync.Mutex
	m   map[string]*session
	now func() time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{m: map[string]*session{}, now: now}
}

func randomID() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// start records a new session for token and sets its cookie.
func (s *sessions) start(w http.ResponseWriter, r *http.Request, token string) {
	id := randomID()
	s.mu.Lock()
	now := s.now()
	for k, v := range s.m { // drop expired ones; the table stays small
		if now.Sub(v.lastUsed) > sessionIdle {
			delete(s.m, k)
		}
	}
	s.m[id] = &session{token: token, csrf: randomID(), lastUsed: now}
	s.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/portal/", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// get returns the request's live session (a copy), or false.
func (s *sessions) get(r *http.Request) (session, bool) {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return session{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	se, ok := s.m[c.Value]
	if !ok {
		return session{}, false
	}
	now := s.now()
	if now.Sub(se.lastUsed) > sessionIdle {
		delete(s.m, c.Value)
		return session{}, false
	}
	se.lastUsed = now
	return *se, true
}

// end forgets the request's session and clears its cookie.
func (s *sessions) end(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(cookieName); err == nil {
		s.mu.Lock()
		delete(s.m, c.Value)
		s.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/portal/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
}

// csrfOK checks the form's CSRF token against the session's.
func csrfOK(se session, r *http.Request) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(se.csrf)) == 1
}
