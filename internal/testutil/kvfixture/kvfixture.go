// Package kvfixture is an Azure Key Vault on loopback speaking the
// secrets REST protocol as azsecrets expects it: an unauthenticated
// request gets the 401 challenge naming the tenant and resource; an
// authenticated GET /secrets/{name}[/{version}]?api-version=... returns
// {"value","id","attributes"} (a disabled secret: 403 SecretDisabled);
// GET /secrets?api-version=... lists the secrets without values, PageSize
// at a time, with nextLink ($skiptoken) to the next page; a token whose
// subject is not a reader gets Key Vault's 403. Vault names outside Vaults
// do not resolve (Client's dialer answers "no such host"). It serves HTTPS with a certificate for
// *.vault.azure.net, so clients use real vault URIs: in-process through
// Client, and a separate process through the CONNECT proxy (HTTPS_PROXY)
// with the CA in CAFile (SSL_CERT_FILE).
package kvfixture

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tenant is the tenant the challenge names.
const Tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"

// Options configure a Vault.
type Options struct {
	// Resource is named in the challenge (default https://vault.azure.net).
	Resource string
	// Secrets are name -> current value.
	Secrets map[string]string
	// Token, when set, is a bearer token accepted whoever it names.
	Token string
	// Readers are the token subjects (JWT sub, read unverified) granted
	// `get` and `list`; others are refused with 403.
	Readers map[string]bool
	// Listers, when set, are the only subjects granted `list` (an access
	// policy with get alone is a common one).
	Listers map[string]bool
	// Disabled secrets are listed with attributes.enabled false, and
	// reading one is refused.
	Disabled map[string]bool
	// PageSize is how many secrets a list page holds (default 25, Key
	// Vault's).
	PageSize int
	// Vaults, when set, are the vault names (lower case) that exist.
	Vaults []string
}

// Vault is a running fixture.
type Vault struct {
	opts   Options
	srv    *httptest.Server
	proxy  *httptest.Server
	pool   *x509.CertPool
	caFile string

	mu         sync.Mutex
	gets       int
	lists      int
	challenges int
	apiVers    []string
}

// Start runs a vault on 127.0.0.1 until the test ends.
func Start(t testing.TB, o Options) *Vault {
	t.Helper()
	if o.Resource == "" {
		o.Resource = "https://vault.azure.net"
	}
	if o.Secrets == nil {
		o.Secrets = map[string]string{}
	}
	if o.PageSize <= 0 {
		o.PageSize = 25
	}
	v := &Vault{opts: o}
	cert, pemCert := selfSigned(t, "*.vault.azure.net")
	v.pool = x509.NewCertPool()
	v.pool.AddCert(cert.Leaf)
	v.caFile = filepath.Join(t.TempDir(), "kv-ca.pem")
	if err := os.WriteFile(v.caFile, pemCert, 0o600); err != nil {
		t.Fatal(err)
	}
	v.srv = httptest.NewUnstartedServer(http.HandlerFunc(v.serve))
	v.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	v.srv.StartTLS()
	t.Cleanup(v.srv.Close)
	v.proxy = httptest.NewServer(http.HandlerFunc(v.connect))
	t.Cleanup(v.proxy.Close)
	return v
}

// Client dials the vault for every *.vault.azure.net host (others, such
// as a loopback token endpoint, as addressed) and trusts its certificate.
func (v *Vault) Client(t testing.TB) *http.Client {
	addr := v.srv.Listener.Addr().String()
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: v.pool},
		DialContext: func(ctx context.Context, network, target string) (net.Conn, error) {
			if host, _, _ := net.SplitHostPort(target); strings.HasSuffix(host, ".vault.azure.net") {
				if !v.exists(host) {
					return nil, &net.OpError{Op: "dial", Net: network, Err: &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}}
				}
				target = addr
			}
			return (&net.Dialer{}).DialContext(ctx, network, target)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// SetListers replaces Options.Listers.
func (v *Vault) SetListers(subjects map[string]bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.opts.Listers = subjects
}

// exists reports whether host is a vault of the fixture.
func (v *Vault) exists(host string) bool {
	if v.opts.Vaults == nil {
		return true
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".vault.azure.net")
	for _, n := range v.opts.Vaults {
		if n == name {
			return true
		}
	}
	return false
}

// ProxyURL is an HTTP CONNECT proxy that tunnels *.vault.azure.net:443 to
// the vault (for HTTPS_PROXY); it refuses other hosts.
func (v *Vault) ProxyURL() string { return v.proxy.URL }

// CAFile is the PEM certificate of the vault (for SSL_CERT_FILE).
func (v *Vault) CAFile() string { return v.caFile }

// Set changes a secret's value.
func (v *Vault) Set(name, value string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.opts.Secrets[name] = value
}

// Gets is how many authorized secret GETs were answered.
func (v *Vault) Gets() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.gets
}

// Lists is how many authorized list pages were answered.
func (v *Vault) Lists() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.lists
}

// Challenges is how many 401 challenges were sent.
func (v *Vault) Challenges() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.challenges
}

// APIVersions are the api-version of each answered GET.
func (v *Vault) APIVersions() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.apiVers...)
}

func (v *Vault) connect(w http.ResponseWriter, r *http.Request) {
	host, port, _ := net.SplitHostPort(r.Host)
	if r.Method != http.MethodConnect || port != "443" || !strings.HasSuffix(host, ".vault.azure.net") {
		http.Error(w, "this proxy only reaches *.vault.azure.net:443", http.StatusForbidden)
		return
	}
	if !v.exists(host) {
		http.Error(w, "no such host "+host, http.StatusBadGateway)
		return
	}
	up, err := net.Dial("tcp", v.srv.Listener.Addr().String())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "no hijacking", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
	conn, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	go func() {
		defer up.Close()
		defer conn.Close()
		go func() { _, _ = io.Copy(up, buf) }()
		_, _ = io.Copy(conn, up)
	}()
}

func (v *Vault) serve(w http.ResponseWriter, r *http.Request) {
	v.mu.Lock()
	defer v.mu.Unlock()
	auth := r.Header.Get("Authorization")
	tok, bearer := strings.CutPrefix(auth, "Bearer ")
	switch {
	case bearer && v.opts.Token != "" && tok == v.opts.Token:
	case bearer && v.opts.Readers != nil:
		sub, op := tokenSubject(tok), "get"
		granted := v.opts.Readers[sub]
		if r.URL.Path == "/secrets" {
			op = "list"
			if v.opts.Listers != nil {
				granted = v.opts.Listers[sub]
			}
		}
		if !granted {
			writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]string{"code": "Forbidden",
				"message": fmt.Sprintf("The user, group or application 'oid=%s' does not have secrets %s permission on key vault.", sub, op)}})
			return
		}
	default:
		v.challenges++
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(
			`Bearer authorization="https://login.microsoftonline.com/%s", resource="%s"`, Tenant, v.opts.Resource))
		writeJSON(w, http.StatusUnauthorized, map[string]any{"error": map[string]string{
			"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer or PoP token."}})
		return
	}
	if r.Method == http.MethodGet && r.URL.Path == "/secrets" && r.URL.Query().Get("api-version") != "" {
		v.list(w, r)
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if r.Method != http.MethodGet || len(parts) < 2 || parts[0] != "secrets" || r.URL.Query().Get("api-version") == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"code": "BadParameter", "message": "bad request"}})
		return
	}
	v.gets++
	v.apiVers = append(v.apiVers, r.URL.Query().Get("api-version"))
	val, ok := v.opts.Secrets[parts[1]]
	if !ok {
		writeJSON(w, http.StatusNotFound, map[string]any{"error": map[string]string{"code": "SecretNotFound",
			"message": fmt.Sprintf("A secret with (name/id) %s was not found in this key vault.", parts[1])}})
		return
	}
	if v.opts.Disabled[parts[1]] {
		writeJSON(w, http.StatusForbidden, map[string]any{"error": map[string]any{"code": "Forbidden",
			"message": "Operation get is not allowed on a disabled secret.", "innererror": map[string]string{"code": "SecretDisabled"}}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"value":      val,
		"id":         "https://" + r.Host + "/secrets/" + parts[1] + "/4387e9f3d6e14c459867679a90fd0f79",
		"attributes": v.attributes(parts[1]),
	})
}

func (v *Vault) attributes(name string) map[string]any {
	return map[string]any{"enabled": !v.opts.Disabled[name], "created": 1700000000, "updated": 1700000000, "recoveryLevel": "Recoverable+Purgeable"}
}

// list answers one page of GET /secrets: the secrets in name order from
// the $skiptoken (the last name of the previous page, base64) on, with
// nextLink while more remain, as Key Vault pages (maxresults at most 25).
func (v *Vault) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after := ""
	if tok := q.Get("$skiptoken"); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": map[string]string{"code": "BadParameter", "message": "invalid $skiptoken"}})
			return
		}
		after = string(b)
	}
	v.lists++
	v.apiVers = append(v.apiVers, q.Get("api-version"))
	names := make([]string, 0, len(v.opts.Secrets))
	for n := range v.opts.Secrets {
		if n > after {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	host := strings.TrimSuffix(r.Host, ":443")
	page := map[string]any{"nextLink": nil}
	items := []any{}
	for i, n := range names {
		if i == v.opts.PageSize {
			next := url.Values{"api-version": {q.Get("api-version")}, "$skiptoken": {base64.RawURLEncoding.EncodeToString([]byte(names[i-1]))},
				"maxresults": {fmt.Sprint(v.opts.PageSize)}}
			page["nextLink"] = "https://" + host + ":443/secrets?" + next.Encode()
			break
		}
		items = append(items, map[string]any{"id": "https://" + host + "/secrets/" + n, "attributes": v.attributes(n)})
	}
	page["value"] = items
	writeJSON(w, http.StatusOK, page)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// tokenSubject reads a JWT's sub without verifying it: the fixture only
// needs to tell identities apart.
func tokenSubject(tok string) string {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct {
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(b, &c)
	return c.Sub
}

func selfSigned(t testing.TB, dnsName string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{dnsName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, IsCA: true, BasicConstraintsValid: true,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
