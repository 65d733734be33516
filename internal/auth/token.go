package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/arcacache/arca/internal/errcode"
	"github.com/arcacache/arca/internal/oci"
)

// TokenPath is the token endpoint (Docker token protocol and ACR OAuth2).
const TokenPath = "/oauth2/token"

// maxTokenForm bounds a POST /oauth2/token body.
const maxTokenForm = 64 << 10

func randomID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// TokenRequest is a parsed token request.
type TokenRequest struct {
	GrantType    string // "" (GET with Basic or anonymous), password, refresh_token
	Username     string
	Password     string
	RefreshToken string
	Service      string
	Scopes       []Scope
	Offline      bool // a refresh token is wanted too
}

// ParseTokenRequest reads a GET (Docker token protocol: Basic credentials,
// scope, service, offline_token) or POST (OAuth2 form: grant_type
// password or refresh_token, scope, service, access_type=offline) request.
func ParseTokenRequest(r *http.Request) (TokenRequest, error) {
	var q url.Values
	var tr TokenRequest
	switch r.Method {
	case http.MethodGet:
		q = r.URL.Query()
		tr.Offline = q.Get("offline_token") == "true"
		if scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok && strings.EqualFold(scheme, "Basic") {
			u, p, ok := parseBasic(strings.TrimSpace(cred))
			if !ok {
				return tr, errors.New("malformed Basic credentials")
			}
			tr.Username, tr.Password, tr.GrantType = u, p, "password"
		}
	case http.MethodPost:
		r.Body = http.MaxBytesReader(nil, r.Body, maxTokenForm)
		if err := r.ParseForm(); err != nil {
			return tr, errors.New("malformed form body")
		}
		q = r.PostForm
		tr.GrantType = q.Get("grant_type")
		tr.Offline = q.Get("access_type") == "offline"
		switch tr.GrantType {
		case "password":
			tr.Username, tr.Password = q.Get("username"), q.Get("password")
		case "refresh_token":
			tr.RefreshToken = q.Get("refresh_token")
		default:
			return tr, errors.New("grant_type must be password or refresh_token")
		}
	default:
		return tr, errors.New("method not allowed")
	}
	tr.Service = q.Get("service")
	sc, err := ParseScopes(q["scope"])
	if err != nil {
		return tr, err
	}
	tr.Scopes = sc
	return tr, nil
}

type tokenResponse struct {
	Token        string `json:"token,omitempty"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// TokenHandler serves TokenPath. The registry is the one served at the
// request's service (the host our challenge named), else at its Host: with
// --external-url every registry's realm is the same host.
func (s *Service) TokenHandler(forHost func(host string) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if s.open {
			errcode.Write(w, r, errcode.New(errcode.Unsupported, "access control is off (--insecure-open): no tokens are needed"))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodPost {
			w.Header().Set("Allow", "GET, POST")
			errcode.Write(w, r, errcode.New(errcode.Unsupported, r.Method+" is not supported on the token endpoint"))
			return
		}
		tr, err := ParseTokenRequest(r)
		if err != nil {
			errcode.Write(w, r, errcode.New(errcode.Unsupported, "invalid token request: "+err.Error()).WithStatus(http.StatusBadRequest))
			return
		}
		host := tr.Service
		if host == "" {
			host = r.Host
		}
		reg := forHost(host)
		id, err := s.tokenIdentity(r.Context(), reg, tr, remoteHost(r))
		if err != nil {
			if errors.Is(err, errBadCredentials) {
				w.Header().Set("WWW-Authenticate", `Basic realm="arca"`)
			}
			s.tokenError(w, r, err)
			return
		}
		access := grantScopes(id, tr.Scopes)
		tok, at, err := s.issue(r.Context(), id, access)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		resp := tokenResponse{AccessToken: tok, ExpiresIn: int(s.accessTTL / time.Second), IssuedAt: at.UTC().Format(time.RFC3339)}
		if r.Method == http.MethodGet {
			resp.Token = tok
		} else {
			sc := make([]string, len(access))
			for i, a := range access {
				sc[i] = a.String()
			}
			resp.Scope = strings.Join(sc, " ")
		}
		if tr.Offline && id.Kind != KindAnonymous {
			if resp.RefreshToken, err = s.newRefreshToken(r.Context(), id); err != nil {
				s.fail(w, r, err)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(resp)
	})
}

func (s *Service) tokenError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, errThrottled):
		w.Header().Set("Retry-After", "60")
		errcode.Write(w, r, errcode.New(errcode.TooManyRequests, "too many failed login attempts; try again later"))
	case errors.Is(err, errBadCredentials):
		errcode.Write(w, r, errcode.New(errcode.Unauthorized, err.Error()))
	default:
		s.fail(w, r, err)
	}
}

// tokenIdentity authenticates a token request; without credentials it is
// the anonymous identity, which exists only where anonymous pull is on.
func (s *Service) tokenIdentity(ctx context.Context, registry string, tr TokenRequest, remote string) (Identity, error) {
	switch tr.GrantType {
	case "password":
		return s.checkPassword(ctx, registry, tr.Username, tr.Password, remote)
	case "refresh_token":
		return s.checkPassword(ctx, registry, NullUser, tr.RefreshToken, remote)
	}
	id, ok, err := s.current(ctx, registry, KindAnonymous, "", "")
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		s.audit(ctx, registry, "", remote, "anonymous token refused: anonymous pull is off")
		return Identity{}, errAnonymousOff
	}
	return id, nil
}

// grantScopes is the requested scopes intersected with what id may do; a
// partial grant is not an error (Docker token spec).
func grantScopes(id Identity, want []Scope) []Scope {
	out := []Scope{}
	for _, sc := range want {
		switch {
		case sc.Type == "repository" && oci.ValidRepository(sc.Name):
			var acts []Action
			for _, a := range sc.Actions {
				if a == "*" {
					acts = append(acts, AllActions...)
				} else {
					acts = append(acts, Action(a))
				}
			}
			g := id.Perms.Granted(sc.Name, acts)
			if len(g) == 0 {
				continue
			}
			names := make([]string, len(g))
			for i, a := range g {
				names[i] = string(a)
			}
			out = append(out, Scope{Type: sc.Type, Name: sc.Name, Actions: names})
		case sc.Type == CatalogScope.Type && sc.Name == CatalogScope.Name && slices.Contains(sc.Actions, "*"):
			// Every identity may list; the listing shows what it may read.
			out = append(out, CatalogScope)
		}
	}
	return out
}
