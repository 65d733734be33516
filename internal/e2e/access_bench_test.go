package e2e

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/oci"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// accessBench is a closed arca with anonymous pull on, an image pushed by
// the admin user, and the credentials to read it three ways.
type accessBench struct {
	a        *arca
	manifest []byte
	basic    string // Basic admin credentials
	bearer   string // a JWT access token for repository:bench/repo:pull
}

func newAccessBench(b *testing.B) *accessBench {
	b.Helper()
	a := startClosedArca(b, "--log-level", "warn")
	pw := a.adminPassword(b)
	a.cli(b, "update", "-n", "default", "--anonymous-pull-enabled", "true")
	im := newImage(b, 4343, "amd64", 4<<10)
	c := crane(b)
	c.run("auth", "login", a.Addr, "-u", "default", "-p", pw)
	c.crane("push", im.writeLayout(b), a.Ref(benchRepo+":v1"))
	e := &accessBench{a: a, manifest: im.Manifest, basic: basicAuth("default", pw)}
	tok, err := e.token()
	if err != nil {
		b.Fatal(err)
	}
	e.bearer = "Bearer " + tok
	return e
}

// token asks the token endpoint for a pull token with Basic credentials.
func (e *accessBench) token() (string, error) {
	req, _ := http.NewRequest(http.MethodGet, e.a.URL()+"/oauth2/token?service="+url.QueryEscape(e.a.Addr)+"&scope=repository:"+benchRepo+":pull", nil)
	req.Header.Set("Authorization", e.basic)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct {
		Token string `json:"token"`
	}
	b, _ := io.ReadAll(res.Body)
	if err := json.Unmarshal(b, &out); err != nil || res.StatusCode != 200 || out.Token == "" {
		return "", &tokenError{res.StatusCode, string(b)}
	}
	return out.Token, nil
}

type tokenError struct {
	status int
	body   string
}

func (e *tokenError) Error() string {
	return "token endpoint: " + http.StatusText(e.status) + ": " + e.body
}

// v3Bearer starts CNCF distribution v3 with token auth (the test token
// service, access log on as upstreamreg configures it), seeds an image and
// returns its host, a bearer token for it and the manifest size.
func v3Bearer(b *testing.B) (host, authz string, size int64) {
	b.Helper()
	up := upstreamreg.Start(b, upstreamreg.Options{Auth: upstreamreg.Token, Binary: upstreamreg.V3Binary(b), TokenTTL: time.Hour})
	desc := up.PushImage(b, benchRepo, "v1", &oci.Platform{OS: "linux", Architecture: "amd64"}, []byte("layer"))
	res, err := http.Get(up.TokenRealm() + "?service=" + upstreamreg.TokenService + "&scope=repository:" + benchRepo + ":pull")
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(res.Body).Decode(&tok); err != nil || tok.Token == "" {
		b.Fatalf("v3 token: %v", err)
	}
	return up.Host, "Bearer " + tok.Token, desc.Size
}

// BenchmarkAccessManifestGet: manifest GETs by tag over 64 concurrent
// keep-alive connections on one closed registry: anonymous (anonymous pull
// on), with a bearer JWT, and with Basic credentials (verified once, then
// from the verified-password cache); and CNCF distribution v3 with its
// token auth and a bearer token.
func BenchmarkAccessManifestGet(b *testing.B) {
	e := newAccessBench(b)
	v3Host, v3Authz, v3Size := v3Bearer(b)
	for _, c := range []struct {
		name, host, authz string
		size              int64
	}{
		{"anonymous", e.a.Addr, "", int64(len(e.manifest))},
		{"bearer", e.a.Addr, e.bearer, int64(len(e.manifest))},
		{"basic", e.a.Addr, e.basic, int64(len(e.manifest))},
		{"distribution-v3-bearer", v3Host, v3Authz, v3Size},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			path := "/v2/" + benchRepo + "/manifests/v1"
			b.RunParallel(func(pb *testing.PB) {
				lc := newLeanClient(c.host)
				lc.authz = c.authz
				defer lc.Close()
				for pb.Next() {
					if st, n, err := lc.get(path, mtOCIManifest, nil); err != nil || st != 200 || n != c.size {
						b.Errorf("manifest GET: status %d, %d bytes, %v", st, n, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkTokenIssue: one GET /oauth2/token with Basic credentials (a
// cached password check, a signed JWT), sequential: ns/op is the latency.
func BenchmarkTokenIssue(b *testing.B) {
	e := newAccessBench(b)
	for b.Loop() {
		if _, err := e.token(); err != nil {
			b.Fatal(err)
		}
	}
}
