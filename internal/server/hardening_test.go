package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a fresh self-signed certificate for 127.0.0.1 with
// common name cn and returns its DER.
func writeCert(t *testing.T, certFile, keyFile, cn string) []byte {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	// Key first, certificate last, as renewal tools do; the reloader
	// waits for a pair that loads.
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return der
}

func runServer(t *testing.T, o Options) string {
	t.Helper()
	ready := make(chan net.Addr, 1)
	o.Ready = func(a net.Addr) { ready <- a }
	o.Addr, o.RegistryName, o.InsecureOpen = "127.0.0.1:0", "default", true
	o.Logger = slog.New(slog.NewTextHandler(&lockedBuffer{}, nil))
	o.Management = ManagementOptions{AdminToken: testAdminToken}
	s, err := New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-errc })
	select {
	case a := <-ready:
		return a.String()
	case err := <-errc:
		t.Fatalf("server: %v", err)
	}
	return ""
}

// A renewed certificate is served without a restart.
func TestTLSCertificateReloaded(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCert(t, certFile, keyFile, "first")
	addr := runServer(t, Options{DataDir: filepath.Join(dir, "data"), TLSCert: certFile, TLSKey: keyFile})
	served := func() string {
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	if cn := served(); cn != "first" {
		t.Fatalf("served %q", cn)
	}
	time.Sleep(10 * time.Millisecond) // a later modification time
	writeCert(t, certFile, keyFile, "second")
	deadline := time.Now().Add(10 * time.Second)
	for served() != "second" {
		if time.Now().After(deadline) {
			t.Fatal("renewed certificate not served within 10s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A broken pair keeps the current certificate.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	if cn := served(); cn != "second" {
		t.Fatalf("after a broken renewal: %q", cn)
	}
}

// --metrics-addr moves /metrics off the main listener.
func TestMetricsAddr(t *testing.T) {
	maddr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}()
	addr := runServer(t, Options{DataDir: t.TempDir(), MetricsAddr: maddr})
	get := func(u string) (int, string) {
		res, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b := new(strings.Builder)
		_, _ = io.Copy(b, res.Body)
		return res.StatusCode, b.String()
	}
	if st, body := get("http://" + maddr + "/metrics"); st != 200 || !strings.Contains(body, "go_goroutines") {
		t.Fatalf("metrics listener: %d", st)
	}
	if st, _ := get("http://" + addr + "/metrics"); st == 200 {
		t.Fatal("/metrics still served on the main listener")
	}
}

// A client that does not finish its request headers within
// --read-header-timeout is disconnected.
func TestSlowHeadersCut(t *testing.T) {
	addr := runServer(t, Options{DataDir: t.TempDir(), ReadHeaderTimeout: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET /v2/ HTTP/1.1\r\nHost: x\r\n")); err != nil { // never finished
		t.Fatal(err)
	}
	start := time.Now()
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadAll(conn)
	if err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("slow client kept for %s (%v)", time.Since(start), err)
	}
}
