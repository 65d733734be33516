package auth

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/arcacache/arca/internal/errcode"
)

// ExchangeRequest is a parsed POST /oauth2/exchange form.
type ExchangeRequest struct {
	Service     string
	Tenant      string
	AccessToken string
	// Identity (an arca extension) is the resource id of the identity
	// wanted, when the token's workload holds several.
	Identity string
}

// ParseExchangeRequest reads ACR's exchange form: grant_type=access_token,
// service, tenant (optional) and access_token.
func ParseExchangeRequest(r *http.Request) (ExchangeRequest, error) {
	var er ExchangeRequest
	if r.Method != http.MethodPost {
		return er, errors.New("method not allowed")
	}
	r.Body = http.MaxBytesReader(nil, r.Body, maxTokenForm)
	if err := r.ParseForm(); err != nil {
		return er, errors.New("malformed form body")
	}
	q := r.PostForm
	if g := q.Get("grant_type"); g != "access_token" {
		return er, errors.New("grant_type must be access_token")
	}
	er.Service, er.Tenant, er.AccessToken, er.Identity = q.Get("service"), q.Get("tenant"), q.Get("access_token"), q.Get("identity")
	if er.AccessToken == "" {
		return er, errors.New("access_token is required")
	}
	return er, nil
}

// ExchangeHandler serves ExchangePath: an identity's token from a
// federated issuer becomes a refresh token of the registry at service
// (else at the Host), for POST /oauth2/token or a login with the user
// 00000000-0000-0000-0000-000000000000. The identity's rights are looked
// up whenever the refresh token is used, so a role assignment deleted
// later takes effect at the next access token.
func (s *Service) ExchangeHandler(forHost func(host string) string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if s.open {
			errcode.Write(w, r, errcode.New(errcode.Unsupported, "access control is off (--insecure-open): no tokens are needed"))
			return
		}
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			errcode.Write(w, r, errcode.New(errcode.Unsupported, r.Method+" is not supported on the exchange endpoint"))
			return
		}
		er, err := ParseExchangeRequest(r)
		if err != nil {
			errcode.Write(w, r, errcode.New(errcode.Unsupported, "invalid exchange request: "+err.Error()).WithStatus(http.StatusBadRequest))
			return
		}
		host := er.Service
		if host == "" {
			host = r.Host
		}
		reg := forHost(host)
		remote := remoteHost(r)
		ipKey := "ip:" + remote
		if _, blocked := s.throttle.Blocked(ipKey); blocked {
			s.audit(r.Context(), reg, "", remote, "throttled")
			s.tokenError(w, r, errThrottled)
			return
		}
		principal, err := s.federatedPrincipal(r.Context(), er.AccessToken, er.Identity)
		if errors.Is(err, errUntrusted) {
			s.throttle.Fail(r.Context(), ipKey)
			s.audit(r.Context(), reg, "federated token", remote, err.Error())
			errcode.Write(w, r, errcode.New(errcode.Unauthorized, err.Error()))
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		id, ok, err := s.current(r.Context(), reg, KindIdentity, principal, "")
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if !ok {
			errcode.Write(w, r, errcode.New(errcode.Unauthorized, "the identity no longer exists"))
			return
		}
		rt, err := s.newRefreshToken(r.Context(), id)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(struct {
			RefreshToken string `json:"refresh_token"`
		}{rt})
	})
}
