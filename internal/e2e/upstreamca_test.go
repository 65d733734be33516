package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// tlsFront serves target over HTTPS with a certificate from a private CA
// and returns its host:port and the CA's PEM file.
func tlsFront(t *testing.T, target string) (host, caFile string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "arca e2e private CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("http://" + target)
	srv := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(u))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	return srv.Listener.Addr().String(), caFile
}

// --upstream-ca trusts a private CA for upstreams; without it the same
// upstream fails verification.
func TestUpstreamCA(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{})
	imgs := seedPullThrough(t, up, 340)
	host, caFile := tlsFront(t, up.Host)

	without := startCachingArca(t, nil, nil)
	without.cacheRule(t, "private-tls", host+"/library/*", "lib/*")
	out, err := crane(t).try("--insecure", "digest", without.Ref("lib/app:v1"))
	if err == nil || !strings.Contains(out, "424") {
		t.Fatalf("upstream with an untrusted certificate: %v %s", err, out)
	}
	if !strings.Contains(out, "certificate") {
		t.Errorf("the 424 does not name the certificate problem: %s", out)
	}

	with := startCachingArca(t, nil, nil, "--upstream-ca", caFile)
	with.cacheRule(t, "private-tls", host+"/library/*", "lib/*")
	if got := crane(t).crane("digest", with.Ref("lib/app:v1")); got != imgs.app.Digest() {
		t.Fatalf("through --upstream-ca: %s, want %s", got, imgs.app.Digest())
	}
}
