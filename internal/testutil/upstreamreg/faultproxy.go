package upstreamreg

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is one rule of a FaultProxy: the next Count requests matching
// Method and PathContains get the fault. Rules are tried in the order they
// were injected; the first live match applies.
type Fault struct {
	Method       string // "" matches any method
	PathContains string // "" matches any path
	Count        int    // requests to affect; negative means until Reset

	// Status, when non-zero, answers the request with this status (an OCI
	// error body on GET) without reaching the registry.
	Status     int
	RetryAfter string      // Retry-After header sent with Status
	Header     http.Header // more headers sent with Status (e.g. RateLimit-Reset)

	// Cut lets the registry's 200 answer through and closes the connection
	// after CutAfter body bytes (Content-Length stays the full size, so the
	// client sees a short body).
	Cut      bool
	CutAfter int64
	// Corrupt flips the first body byte of the registry's 200 answer (same
	// length, wrong digest).
	Corrupt bool
	// Stall pauses the registry's 200 answer for this long after CutAfter
	// body bytes (then goes on, or cuts if Cut is set too).
	Stall time.Duration
	// Delay holds the request this long before anything else (a slow
	// upstream that has not sent headers yet; a long Delay is a blackhole:
	// the connection is accepted and never answered).
	Delay time.Duration
	// Location, when set, answers 307 Temporary Redirect to it (an
	// upstream pointing arca at an internal or metadata address, or from
	// HTTPS down to HTTP).
	Location string
}

// Blackhole accepts every request and never answers it (until Reset).
func (p *FaultProxy) Blackhole() { p.Inject(Fault{Count: -1, Delay: time.Hour}) }

// RedirectTo answers every blob GET with a 307 to location (until Reset).
func (p *FaultProxy) RedirectTo(location string) {
	p.Inject(Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: -1, Location: location})
}

// ProxyRequest is one request the proxy received.
type ProxyRequest struct {
	Method string
	URI    string
	Fault  string // "" when passed through untouched
}

// StorageRequest is one request the redirect target ("blob storage") got.
type StorageRequest struct {
	Path          string
	Authorization string
}

// FaultProxy is a reverse proxy in front of a Registry that injects faults.
type FaultProxy struct {
	target  *Registry
	addr    string
	srv     *http.Server
	proxy   *httputil.ReverseProxy
	storage net.Listener

	tls    *tls.Config // nil: plain HTTP
	caFile string

	mu       sync.Mutex
	ln       net.Listener
	conns    map[net.Conn]struct{}
	faults   []*Fault
	redirect bool
	headers  http.Header
	log      []ProxyRequest
	storeLog []StorageRequest
}

// NewFaultProxy starts a proxy in front of target on a loopback port; it
// stops when the test ends.
func NewFaultProxy(t testing.TB, target *Registry) *FaultProxy {
	t.Helper()
	return newFaultProxy(t, target, nil, "")
}

// NewTLSFaultProxy is NewFaultProxy serving HTTPS with a fresh self-signed
// certificate for 127.0.0.1, whose PEM is in CAFile (point SSL_CERT_FILE
// at it to make a client trust it).
func NewTLSFaultProxy(t testing.TB, target *Registry) *FaultProxy {
	t.Helper()
	cfg, pemBytes, err := selfSignedTLS()
	if err != nil {
		t.Fatalf("upstreamreg: tls: %v", err)
	}
	caFile := filepath.Join(t.TempDir(), "fault-proxy-ca.pem")
	if err := os.WriteFile(caFile, pemBytes, 0o644); err != nil {
		t.Fatalf("upstreamreg: %v", err)
	}
	return newFaultProxy(t, target, cfg, caFile)
}

// CAFile is the PEM certificate of a TLS proxy ("" for plain HTTP).
func (p *FaultProxy) CAFile() string { return p.caFile }

func selfSignedTLS() (*tls.Config, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "upstreamreg fault proxy"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

func newFaultProxy(t testing.TB, target *Registry, tlsCfg *tls.Config, caFile string) *FaultProxy {
	t.Helper()
	u, err := url.Parse(target.URL())
	if err != nil {
		t.Fatalf("upstreamreg: %v", err)
	}
	p := &FaultProxy{target: target, conns: map[net.Conn]struct{}{}, headers: http.Header{}, tls: tlsCfg, caFile: caFile}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = pr.In.Host // the registry builds Location URLs from it
		},
		FlushInterval: -1, // stream: the cut must happen mid-body, not after buffering
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second, ConnState: p.trackConn, ErrorLog: log.New(io.Discard, "", 0)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("upstreamreg: fault proxy listen: %v", err)
	}
	p.addr, p.ln = ln.Addr().String(), ln
	go func() { _ = p.srv.Serve(p.wrapTLS(ln)) }()
	if p.storage, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatalf("upstreamreg: storage listen: %v", err)
	}
	storage := &http.Server{Handler: http.HandlerFunc(p.serveStorage), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = storage.Serve(p.storage) }()
	t.Cleanup(func() {
		_ = storage.Close()
		_ = p.srv.Close()
	})
	return p
}

func (p *FaultProxy) wrapTLS(ln net.Listener) net.Listener {
	if p.tls == nil {
		return ln
	}
	return tls.NewListener(ln, p.tls)
}

// Host is the proxy's "127.0.0.1:port".
func (p *FaultProxy) Host() string { return p.addr }

// StorageHost is the redirect target's "127.0.0.1:port".
func (p *FaultProxy) StorageHost() string { return p.storage.Addr().String() }

func (p *FaultProxy) trackConn(c net.Conn, s http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s {
	case http.StateNew:
		p.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(p.conns, c)
	}
}

// Inject adds a fault rule.
func (p *FaultProxy) Inject(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &f)
}

// TooManyRequests answers the next k requests 429 with Retry-After (and
// Docker Hub's TOOMANYREQUESTS body).
func (p *FaultProxy) TooManyRequests(k int, retryAfter string) {
	p.Inject(Fault{Count: k, Status: http.StatusTooManyRequests, RetryAfter: retryAfter})
}

// Unavailable answers the next k requests 503.
func (p *FaultProxy) Unavailable(k int) {
	p.Inject(Fault{Count: k, Status: http.StatusServiceUnavailable})
}

// CutBlobsAfter cuts the connection after n body bytes of the next k blob
// GETs.
func (p *FaultProxy) CutBlobsAfter(n int64, k int) {
	p.Inject(Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: k, Cut: true, CutAfter: n})
}

// CorruptBlobs flips a byte in the next k blob GET bodies.
func (p *FaultProxy) CorruptBlobs(k int) {
	p.Inject(Fault{Method: http.MethodGet, PathContains: "/blobs/", Count: k, Corrupt: true})
}

// SetHeader adds a header to every answer, e.g. Docker Hub's
// "ratelimit-remaining: 20;w=21600". An empty value removes it.
func (p *FaultProxy) SetHeader(key, value string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if value == "" {
		p.headers.Del(key)
		return
	}
	p.headers.Set(key, value)
}

// RedirectBlobs makes blob GETs answer 307 to the proxy's "blob storage"
// host, which, like S3 with a presigned URL, rejects requests carrying an
// Authorization header (400) and serves the blob otherwise.
func (p *FaultProxy) RedirectBlobs(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redirect = on
}

// Reset removes every fault rule, header and redirect.
func (p *FaultProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults, p.redirect, p.headers = nil, false, http.Header{}
}

// Down closes the listener and every open connection: new connections are
// refused until Up.
func (p *FaultProxy) Down() {
	p.mu.Lock()
	ln := p.ln
	p.ln = nil
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for _, c := range conns {
		_ = c.Close()
	}
}

// Up listens again on the same port after Down.
func (p *FaultProxy) Up(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return
	}
	var err error
	deadline := time.Now().Add(3 * time.Second)
	for {
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.ln = ln
			go func() { _ = p.srv.Serve(p.wrapTLS(ln)) }()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upstreamreg: fault proxy up again on %s: %v", p.addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Requests counts requests the proxy received with method ("" for any)
// whose URI contains pathSubstring, faulted ones included.
func (p *FaultProxy) Requests(method, pathSubstring string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.log {
		if (method == "" || r.Method == method) && strings.Contains(r.URI, pathSubstring) {
			n++
		}
	}
	return n
}

// Log returns every request the proxy received.
func (p *FaultProxy) Log() []ProxyRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxyRequest(nil), p.log...)
}

// StorageRequests returns every request the redirect target received.
func (p *FaultProxy) StorageRequests() []StorageRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]StorageRequest(nil), p.storeLog...)
}

// take finds the fault for r, consumes one use of it, and logs r.
func (p *FaultProxy) take(r *http.Request) (f Fault, redirect bool, hdr http.Header) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, rule := range p.faults {
		if rule.Count == 0 || (rule.Method != "" && rule.Method != r.Method) || !strings.Contains(r.URL.Path, rule.PathContains) {
			continue
		}
		if rule.Count > 0 {
			rule.Count--
		}
		f = *rule
		break
	}
	redirect = p.redirect && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha")
	desc := describe(f, redirect)
	p.log = append(p.log, ProxyRequest{Method: r.Method, URI: r.URL.RequestURI(), Fault: desc})
	return f, redirect, p.headers.Clone()
}

func describe(f Fault, redirect bool) string {
	switch {
	case f.Location != "":
		return "redirect to " + f.Location
	case f.Status != 0:
		return fmt.Sprintf("status %d", f.Status)
	case f.Stall > 0:
		return fmt.Sprintf("stall %s after %d bytes", f.Stall, f.CutAfter)
	case f.Cut:
		return fmt.Sprintf("cut after %d bytes", f.CutAfter)
	case f.Corrupt:
		return "corrupt"
	case redirect:
		return "redirect"
	}
	return ""
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, redirect, hdr := p.take(r)
	if f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
	}
	for k, v := range hdr {
		w.Header()[k] = v
	}
	switch {
	case f.Location != "":
		http.Redirect(w, r, f.Location, http.StatusTemporaryRedirect)
	case f.Status != 0:
		writeFault(w, r, f)
	case redirect:
		p.redirectBlob(w, r)
	case f.Cut || f.Corrupt || f.Stall > 0:
		p.proxy.ServeHTTP(&faultWriter{ResponseWriter: w, cut: f.Cut, cutAfter: f.CutAfter, corrupt: f.Corrupt, stall: f.Stall, ctx: r.Context()}, r)
	default:
		p.proxy.ServeHTTP(w, r)
	}
}

func writeFault(w http.ResponseWriter, r *http.Request, f Fault) {
	code, msg := "UNAVAILABLE", "the upstream is unavailable (injected fault)"
	if f.Status == http.StatusTooManyRequests {
		code, msg = "TOOMANYREQUESTS", "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: https://www.docker.com/increase-rate-limit"
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	for k, v := range f.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.Status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`+"\n", code, msg)
	}
}

// errCut makes ReverseProxy abort the connection (it panics with
// http.ErrAbortHandler on a body copy error).
var errCut = errors.New("upstreamreg: connection cut by fault injection")

// faultWriter cuts or corrupts the body of a 200 answer.
type faultWriter struct {
	http.ResponseWriter
	status   int
	written  int64
	cut      bool
	cutAfter int64
	corrupt  bool
	stall    time.Duration
	ctx      context.Context
}

func (w *faultWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *faultWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status != http.StatusOK {
		return w.ResponseWriter.Write(b)
	}
	if w.corrupt && w.written == 0 && len(b) > 0 {
		b = append([]byte{b[0] ^ 0xff}, b[1:]...)
	}
	if (w.cut || w.stall > 0) && w.written <= w.cutAfter && w.written+int64(len(b)) > w.cutAfter {
		n, err := w.ResponseWriter.Write(b[:w.cutAfter-w.written])
		w.written += int64(n)
		w.Flush()
		if err != nil {
			return n, err
		}
		if w.stall > 0 {
			select {
			case <-time.After(w.stall):
			case <-w.ctx.Done():
				return n, w.ctx.Err()
			}
		}
		if w.cut {
			return n, errCut
		}
		w.stall = 0
		m, err := w.ResponseWriter.Write(b[n:])
		w.written += int64(m)
		return n + m, err
	}
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

func (w *faultWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *faultWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// redirectBlob answers a blob GET with a 307 to the storage host (with a
// query like a presigned URL's) once the registry says the request may have
// the blob (a HEAD with the client's headers answers 200); otherwise it
// passes the registry's refusal on (401 with its challenge, 404).
func (p *FaultProxy) redirectBlob(w http.ResponseWriter, r *http.Request) {
	head, err := http.NewRequestWithContext(r.Context(), http.MethodHead, p.target.URL()+r.URL.Path, nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	head.Header = r.Header.Clone()
	resp, err := p.target.client.Do(head)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		for _, k := range []string{"Www-Authenticate", "Docker-Distribution-Api-Version"} {
			if v := resp.Header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(resp.StatusCode)
		fmt.Fprintf(w, `{"errors":[{"code":"UNKNOWN","message":"registry answered %d to the blob HEAD"}]}`+"\n", resp.StatusCode)
		return
	}
	loc := "http://" + p.StorageHost() + "/storage" + strings.TrimPrefix(r.URL.Path, "/v2") + "?X-Amz-Signature=fixture"
	http.Redirect(w, r, loc, http.StatusTemporaryRedirect)
}

// serveStorage plays blob storage: a request with an Authorization header
// gets S3's 400 ("Only one auth mechanism allowed"); otherwise the blob is
// fetched from the registry with the fixture's own credentials.
func (p *FaultProxy) serveStorage(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.storeLog = append(p.storeLog, StorageRequest{Path: r.URL.Path, Authorization: r.Header.Get("Authorization")})
	p.mu.Unlock()
	if r.Header.Get("Authorization") != "" {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature query string parameter or the Authorization header should be specified</Message></Error>`)
		return
	}
	rest := strings.TrimPrefix(r.URL.Path, "/storage/")
	i := strings.LastIndex(rest, "/blobs/")
	if i < 0 {
		http.NotFound(w, r)
		return
	}
	repo := rest[:i]
	req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, p.target.URL()+"/v2/"+rest, nil)
	if err == nil {
		err = p.target.Authorize(req, repo)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	resp, err := p.target.client.Do(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for _, k := range []string{"Content-Length", "Content-Type", "Docker-Content-Digest"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
