package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/mgmt"
)

// selfSignedCert writes a certificate for 127.0.0.1 and its key.
func selfSignedCert(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "arca-e2e"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}))
	return certFile, keyFile
}

// The Azure SDK for JavaScript creates a registry, a scope map and a
// token and reads them back (over HTTPS: it sends bearer tokens only there).
func TestJavaScriptSDK(t *testing.T) {
	sdk := npmTools(t, "jssdk", "@azure/arm-containerregistry/package.json")
	cert, key := selfSignedCert(t)
	a := startClosedArca(t, "--tls-cert", cert, "--tls-key", key)
	script, err := filepath.Abs(filepath.Join("testdata", "jssdk", "sdk.cjs"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", script)
	cmd.Env = append(os.Environ(), "NODE_PATH="+filepath.Join(sdk, "node_modules"), "NODE_EXTRA_CA_CERTS="+cert,
		"ARCA_ENDPOINT=https://"+a.Addr, "ARCA_TOKEN="+ptAdminToken, "ARCA_SUB="+mgmt.DefaultSubscriptionID, "ARCA_RG="+mgmt.DefaultResourceGroup)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node sdk.cjs: %v\n%s\n%s", err, out, stderr)
	}
	var got struct {
		Default struct {
			SKU, LoginServer, CreationDate string
			AdminUserEnabled               bool
		}
		Created  struct{ Name, LoginServer, SKU, ProvisioningState string }
		Updated  struct{ AnonymousPullEnabled, AdminUserEnabled bool }
		ScopeMap struct {
			ID          string
			Actions     []string
			Description string
		}
		Token struct {
			ScopeMapID, Status string
			Passwords          []string
		}
		Generated      struct{ Username, Password string }
		AdminUser      string
		AdminPasswords int
		ScopeMaps      []string
		Registries     []string
	}
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("sdk output: %v\n%s", err, out)
	}
	t.Logf("JavaScript SDK read: %s", out)
	switch {
	case got.Default.SKU != "Standard" || got.Default.LoginServer != a.Addr || got.Default.CreationDate == "":
		t.Errorf("registries.get(default): %+v", got.Default)
	case got.Created.Name != "jsreg01" || got.Created.LoginServer != "jsreg01.localhost" || got.Created.ProvisioningState != "Succeeded":
		t.Errorf("registries.create: %+v", got.Created)
	case !got.Updated.AnonymousPullEnabled || !got.Updated.AdminUserEnabled:
		t.Errorf("registries.update: %+v", got.Updated)
	case len(got.ScopeMap.Actions) != 2 || got.ScopeMap.Description != "read app":
		t.Errorf("scopeMaps: %+v", got.ScopeMap)
	case got.Token.ScopeMapID != got.ScopeMap.ID || got.Token.Status != "enabled" || !slices.Equal(got.Token.Passwords, []string{"password1"}):
		t.Errorf("tokens: %+v", got.Token)
	case got.Generated.Username != "js-token" || len(got.Generated.Password) < 40:
		t.Errorf("generateCredentials: %+v", got.Generated)
	case got.AdminUser != "jsreg01" || got.AdminPasswords != 2:
		t.Errorf("listCredentials: %s %d", got.AdminUser, got.AdminPasswords)
	case !slices.Contains(got.ScopeMaps, "js-reader") || !slices.Contains(got.ScopeMaps, "_repositories_pull"):
		t.Errorf("scopeMaps.list: %v", got.ScopeMaps)
	case strings.Join(got.Registries, ",") != "default,jsreg01":
		t.Errorf("registries.list: %v", got.Registries)
	}
}
