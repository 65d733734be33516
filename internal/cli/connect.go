package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arcacache/arca/internal/armclient"
)

// apiVersion is what the CLI speaks: the preview that has syncMode,
// syncReferrers, artifactSyncFilters and cache-rule identities.
const apiVersion = "2025-09-01-preview"

// clientOpts are the flags every client command has: where to connect
// and how to print.
type clientOpts struct {
	env      Env
	endpoint string
	token    string
	output   string
	query    string
	timeout  time.Duration
}

func newClientOpts(env Env) *clientOpts { return &clientOpts{env: env} }

// addFlags registers the shared flags (persistent on a command group).
func (o *clientOpts) addFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.endpoint, "endpoint", "", "arca server URL (else $ARCA_ENDPOINT, else the endpoint saved by arca login)")
	fs.StringVar(&o.token, "token", "", "admin bearer token (else $ARCA_TOKEN, else the token saved by arca login)")
	fs.StringVarP(&o.output, "output", "o", "json", outputUsage())
	fs.StringVar(&o.query, "query", "", "JMESPath query string, applied to the output (see https://jmespath.org)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up on the server after this long")
}

// serverInfo is GET /arca/v1/info: what the server calls its
// subscription and resource group, and its registries.
type serverInfo struct {
	SubscriptionID  string `json:"subscriptionId"`
	ResourceGroup   string `json:"resourceGroup"`
	DefaultRegistry string `json:"defaultRegistry"`
	Registries      []struct {
		Name  string   `json:"name"`
		Hosts []string `json:"hosts"`
	} `json:"registries"`
}

// session is one command's connection: the client, the printer and the
// server's info, fetched once and kept in memory only.
type session struct {
	env  Env
	arm  *armclient.Client
	out  *printer
	info *serverInfo
	// refusedHint follows a 401 from the server: how to pass a token
	// (loginHint), except in arca login, which was given one.
	refusedHint string
}

// loginHint tells how to give the CLI a token.
const loginHint = "pass --token, set ARCA_TOKEN, or run `arca login`"

// connect resolves endpoint and token (flag, environment, saved login)
// and prepares the printer. It does not contact the server.
func (o *clientOpts) connect() (*session, error) { return o.connectWith(requestTimeout) }

// requestTimeout bounds one management API request of most commands.
const requestTimeout = 60 * time.Second

// connectWith is connect with another per-request timeout (0: none).
func (o *clientOpts) connectWith(timeout time.Duration) (*session, error) {
	p, err := newPrinter(o.env.Stdout, o.output, o.query)
	if err != nil {
		return nil, err
	}
	endpoint, token, err := o.credentials()
	if err != nil {
		return nil, err
	}
	c, err := armclient.New(endpoint, token, armclient.Options{
		HTTPClient: o.httpClient(timeout),
		UserAgent:  "arca-cli",
	})
	if err != nil {
		return nil, err
	}
	return &session{env: o.env, arm: c, out: p, refusedHint: loginHint}, nil
}

func (o *clientOpts) credentials() (endpoint, token string, err error) {
	endpoint = firstNonEmpty(o.endpoint, o.env.Getenv("ARCA_ENDPOINT"))
	token = firstNonEmpty(o.token, o.env.Getenv("ARCA_TOKEN"))
	saved, err := loadLogin(o.env)
	if err != nil {
		return "", "", err
	}
	if endpoint == "" {
		endpoint = saved.Endpoint
	}
	// A saved token only goes to the endpoint it was saved for.
	if token == "" && saved.Token != "" && sameEndpoint(endpoint, saved.Endpoint) {
		token = saved.Token
	}
	if endpoint == "" {
		return "", "", errors.New("no arca endpoint: pass --endpoint URL, set ARCA_ENDPOINT, or run `arca login --endpoint URL --token TOKEN`")
	}
	return endpoint, token, nil
}

func sameEndpoint(a, b string) bool {
	return a != "" && strings.TrimSuffix(a, "/") == strings.TrimSuffix(b, "/")
}

func firstNonEmpty(xs ...string) string {
	for _, x := range xs {
		if x != "" {
			return x
		}
	}
	return ""
}

// context returns the command's context bounded by --timeout.
func (o *clientOpts) context(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	if o.timeout > 0 {
		return context.WithTimeout(ctx, o.timeout)
	}
	return context.WithCancel(ctx)
}

// call wraps armclient.Call with the session's hint for 401s.
func (s *session) call(ctx context.Context, method, path string, body any) (json.RawMessage, error) {
	out, err := s.arm.Call(ctx, method, path, body)
	return out, s.authHint(err)
}

func (s *session) list(ctx context.Context, path string) ([]json.RawMessage, error) {
	out, err := s.arm.List(ctx, path)
	return out, s.authHint(err)
}

// authHint adds the session's hint to a 401.
func (s *session) authHint(err error) error { return withRefusedHint(err, s.refusedHint) }

// authHint adds loginHint to a 401, for callers without a session.
func authHint(err error) error { return withRefusedHint(err, loginHint) }

func withRefusedHint(err error, hint string) error {
	var ae *armclient.Error
	if errors.As(err, &ae) && ae.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("%w (%s)", err, hint)
	}
	return err
}

// serverInfo fetches GET /arca/v1/info once.
func (s *session) serverInfo(ctx context.Context) (*serverInfo, error) {
	if s.info != nil {
		return s.info, nil
	}
	resp, err := s.arm.Do(ctx, http.MethodGet, "/arca/v1/info", nil)
	if err != nil {
		return nil, fmt.Errorf("reading server info from %s: %w", s.arm.Endpoint(), s.authHint(err))
	}
	var info serverInfo
	if err := json.Unmarshal(resp.Body, &info); err != nil {
		return nil, fmt.Errorf("reading server info from %s: not JSON: %w", s.arm.Endpoint(), err)
	}
	if info.SubscriptionID == "" {
		return nil, fmt.Errorf("server info from %s has no subscriptionId", s.arm.Endpoint())
	}
	// --subscription goes into the ids the CLI builds, as in az; a server
	// has one subscription and answers SubscriptionNotFound for another.
	if sub := s.env.global().subscription; sub != "" {
		info.SubscriptionID = sub
	}
	s.info = &info
	return s.info, nil
}

// registryNameRe is the CLI-side check az applies to -r.
var registryArgRe = regexp.MustCompile(`^[a-zA-Z0-9]{5,50}$`)

// registryPath returns the ARM path of registry reg, resolving the
// subscription and (unless given) the resource group from the server.
// reg may be a registry name in any case or one of its host names.
func (s *session) registryPath(ctx context.Context, reg, rg string) (string, error) {
	info, err := s.serverInfo(ctx)
	if err != nil {
		return "", err
	}
	name, err := info.resolveRegistry(reg, s.arm.Endpoint())
	if err != nil {
		return "", err
	}
	if rg == "" {
		rg = info.ResourceGroup
	}
	if rg == "" {
		return "", errors.New("Resource group could not be determined. Please provide a valid resource group name.")
	}
	return "/subscriptions/" + pathEscape(info.SubscriptionID) + "/resourceGroups/" + pathEscape(rg) +
		"/providers/Microsoft.ContainerRegistry/registries/" + pathEscape(name), nil
}

// resolveRegistry maps -r (a registry name, or a host name it is served
// at) to the registry's name. endpoint is the server's URL the CLI talks to.
func (info *serverInfo) resolveRegistry(reg, endpoint string) (string, error) {
	for _, r := range info.Registries {
		if strings.EqualFold(r.Name, reg) {
			return r.Name, nil
		}
	}
	if strings.ContainsAny(reg, ".:") {
		for _, r := range info.Registries {
			for _, h := range r.Hosts {
				if strings.EqualFold(h, reg) {
					return r.Name, nil
				}
			}
		}
		// The server serves the default registry on every host no other
		// registry claims: the endpoint's own host (its --addr) among them.
		if u, err := url.Parse(endpoint); err == nil && strings.EqualFold(u.Host, reg) && info.DefaultRegistry != "" {
			return info.DefaultRegistry, nil
		}
		return "", fmt.Errorf("argument --registry/-r: no registry on this server is served at host %q", reg)
	}
	if !registryArgRe.MatchString(reg) {
		return "", errors.New("argument --registry/-r: Registry names may contain only alpha numeric characters and must be between 5 and 50 characters")
	}
	// Unknown names go to the server, which answers ARM's 404.
	return reg, nil
}

func pathEscape(s string) string { return url.PathEscape(s) }

// withAPIVersion appends the api-version query.
func withAPIVersion(path string) string { return path + "?api-version=" + apiVersion }
