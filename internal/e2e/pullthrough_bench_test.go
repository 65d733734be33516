package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/minio"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// BenchmarkPullThrough measures pull-through caching against a real
// upstream (Debian's docker-registry 2.8) on loopback, in one run:
//
//	Cold{Lean,Crane}/{direct,arca,dist2.8,dist3}  a pull with an empty cache (Lean also /floor:
//	                              the pass-through floor, see servePassThrough)
//	                              (every op starts a fresh cache); direct = from the upstream
//	Warm{Lean,Crane}/{arca,dist2.8,dist3,plainfile}  pulls of cached content
//	Wave32/{one,32}-{loopback,wan} one cold pull vs 32 at once of one image; wan = the
//	                              upstream behind a per-connection bandwidth limit
//
// dist2.8 and dist3 are distribution in proxy mode (proxy.remoteurl) on the
// same upstream: Debian's docker-registry 2.8 and distribution v3.1.2
// (.tools/bin/registry, installed by scripts/bench-pullthrough.sh). Lean is
// a Go http GET of the manifest and every blob into io.Discard; Crane is
// `crane pull --format oci`. scripts/bench-pullthrough.sh prints the ratios.
func BenchmarkPullThrough(b *testing.B) {
	e := newPTBench(b)
	for _, mode := range []string{"Lean", "Crane"} {
		b.Run("Cold"+mode, func(b *testing.B) {
			targets := []string{"direct", "arca", "dist2.8", "dist3"}
			if mode == "Lean" {
				targets = append(targets, "floor")
			}
			for _, tg := range targets {
				b.Run(tg, func(b *testing.B) { e.cold(b, tg, mode) })
			}
		})
		b.Run("Warm"+mode, func(b *testing.B) {
			for _, tg := range []string{"arca", "dist2.8", "dist3", "plainfile"} {
				if tg == "plainfile" && mode == "Crane" {
					continue // not a registry
				}
				b.Run(tg, func(b *testing.B) { e.warm(b, tg, mode) })
			}
		})
	}
	// The same cold pull over a bandwidth-limited upstream link, the usual
	// case for an internet registry; loopback above is CPU-bound on a
	// small machine where upstream, cache and client share the cores.
	b.Run("ColdWAN", func(b *testing.B) {
		for _, tg := range []string{"direct", "arca", "dist2.8", "dist3"} {
			b.Run(tg, func(b *testing.B) { e.coldOn(b, tg, "Lean", e.wan.addr, e.wave) })
		}
	})
	b.Run("Wave32", func(b *testing.B) {
		for _, link := range []string{"loopback", "wan"} {
			for _, n := range []int{1, 32} {
				name := fmt.Sprintf("one-%s", link)
				if n > 1 {
					name = fmt.Sprintf("%d-%s", n, link)
				}
				b.Run(name, func(b *testing.B) { e.runWave(b, n, link == "wan") })
			}
		}
	})
}

const (
	ptBigLayer  = 256 << 20 // the cold/warm image's layer
	ptWaveLayer = 32 << 20  // the wave image's layer
	// ptWANRate is the per-connection upstream bandwidth of the wan wave,
	// a typical internet registry download rate.
	ptWANRate = 25 << 20
)

// ptImage is an image seeded into the bench upstream.
type ptImage struct {
	repo, tag string
	manifest  []byte
	blobs     []ptBlob // config, then layers
	layerFile string   // the big layer's bytes, for the plain file server
}

type ptBlob struct {
	digest string
	size   int64
}

func (im *ptImage) size() int64 {
	n := int64(len(im.manifest))
	for _, bl := range im.blobs {
		n += bl.size
	}
	return n
}

type ptBench struct {
	dir      string
	up       *upstreamreg.Registry
	wan      *throttleProxy
	big      *ptImage // library/big:v1
	wave     *ptImage // library/wave:v1
	dist3Bin string
	plain    string // plain file server address

	minioOnce sync.Once // MinIO for the S3 targets, started on first use
	minio     *minio.Server
	minioErr  error
}

func newPTBench(b *testing.B) *ptBench {
	b.Helper()
	e := &ptBench{dir: b.TempDir(), dist3Bin: toolPath(b, "registry")}
	toolPath(b, "crane")
	e.up = upstreamreg.Start(b, upstreamreg.Options{})
	e.wan = startThrottleProxy(b, e.up.Host, ptWANRate)
	e.big = e.seed(b, "library/big", ptBigLayer, 1)
	e.wave = e.seed(b, "library/wave", ptWaveLayer, 2)
	p := startBenchProc(b, "plainfile", "/blob", func(addr string) (*exec.Cmd, error) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), plainFileEnv+"="+e.big.layerFile, plainAddrEnv+"="+addr)
		return cmd, nil
	})
	b.Cleanup(p.stop)
	e.plain = p.addr
	return e
}

// seed writes a random layer file, pushes it streaming, then the config
// and manifest.
func (e *ptBench) seed(b *testing.B, repo string, layerSize int, key byte) *ptImage {
	b.Helper()
	path := filepath.Join(e.dir, strings.ReplaceAll(repo, "/", "_")+".layer")
	d, err := writeRandomFile(path, layerSize, [32]byte{key, 'p', 't'})
	if err != nil {
		b.Fatal(err)
	}
	if err := pushBlobFile(e.up.Host, repo, path, d); err != nil {
		b.Fatalf("seed %s: %v", repo, err)
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[%q]}}`, d))
	cd := e.up.PushBlob(b, repo, cfg).String()
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}]}`,
		mtOCIManifest, mtOCIConfig, cd, len(cfg), d, layerSize)
	e.up.PushManifest(b, repo, "v1", mtOCIManifest, []byte(m))
	return &ptImage{repo: repo, tag: "v1", manifest: []byte(m), layerFile: path,
		blobs: []ptBlob{{cd, int64(len(cfg))}, {d, int64(layerSize)}}}
}

// ptServer is one server a pull goes to, and the repository name the
// image has there.
type ptServer struct {
	addr, repo string
	pid        int
	stop       func()
}

// start starts a fresh (empty) server of kind tg: arca with a rule, or
// distribution in proxy mode. upstream is the host it pulls from.
func (e *ptBench) start(b *testing.B, tg, upstream string) *ptServer {
	b.Helper()
	switch tg {
	case "direct":
		return &ptServer{addr: upstream, repo: "library", stop: func() {}}
	case "arca", "arca-s3", "arca-base", "arca-s3-base", "arca-alt":
		// -base: the binary ARCA_BENCH_BASE_BIN (say, a build of the
		// commit before a change), to compare both in one run; -alt: a
		// third build, ARCA_BENCH_ALT_BIN (say, a variant of the change).
		bin := arcaBin
		for suffix, env := range map[string]string{"-base": "ARCA_BENCH_BASE_BIN", "-alt": "ARCA_BENCH_ALT_BIN"} {
			if strings.HasSuffix(tg, suffix) {
				if bin = os.Getenv(env); bin == "" {
					b.Fatalf("%s: set %s to the arca binary to compare with", tg, env)
				}
			}
		}
		var env, args []string
		if strings.HasPrefix(tg, "arca-s3") { // blobs in a fresh bucket of the bench's MinIO
			m, bucket := e.newBucket(b)
			env, args = m.Env(), []string{"--blobs", m.BlobsURL(bucket, "arca")}
		}
		a := startCachingArcaBin(b, bin, []string{upstream}, env, append(args, "--log-level", "warn")...)
		a.cacheRule(b, "library-wild", upstream+"/library/*", "lib/*")
		return &ptServer{addr: a.Addr, repo: "lib", pid: a.Pid(), stop: func() { a.Stop(); os.RemoveAll(a.DataDir) }}
	case "dist2.8", "dist3", "dist3-s3":
		bin := "/usr/bin/docker-registry"
		if tg != "dist2.8" {
			bin = e.dist3Bin
		}
		storage := ""
		if tg == "dist3-s3" {
			storage = s3Storage(e.newBucket(b))
		}
		p, dir := startDistProxy(b, bin, upstream, storage)
		return &ptServer{addr: p.addr, repo: "library", pid: p.cmd.Process.Pid, stop: func() { p.stop(); os.RemoveAll(dir) }}
	case "plainfile":
		return &ptServer{addr: e.plain, stop: func() {}}
	case "floor":
		dir := b.TempDir()
		p := startBenchProc(b, "floor", "/v2/", func(addr string) (*exec.Cmd, error) {
			cmd := exec.Command(os.Args[0])
			cmd.Env = append(os.Environ(), floorUpstreamEnv+"="+upstream, floorAddrEnv+"="+addr, floorDirEnv+"="+dir)
			return cmd, nil
		})
		return &ptServer{addr: p.addr, repo: "library", pid: p.cmd.Process.Pid, stop: func() { p.stop(); os.RemoveAll(dir) }}
	}
	b.Fatalf("unknown target %s", tg)
	return nil
}

// pull pulls im from s with the lean client or crane, checking sizes (and
// digests when verify is set; crane always verifies).
func (e *ptBench) pull(b *testing.B, s *ptServer, im *ptImage, mode string, verify bool) error {
	name := im.repo[strings.IndexByte(im.repo, '/')+1:]
	repo := s.repo + "/" + name
	if s.repo == "" { // the plain file server: the layer only
		return leanGet(s.addr, "/blob", "", im.blobs[1], verify)
	}
	if mode == "Crane" {
		out := filepath.Join(e.dir, "crane-out")
		defer os.RemoveAll(out)
		c := crane(b)
		if o, err := c.try("--insecure", "pull", "--format", "oci", s.addr+"/"+repo+":"+im.tag, out); err != nil {
			return fmt.Errorf("crane pull: %v: %s", err, o)
		}
		return nil
	}
	if err := leanGet(s.addr, "/v2/"+repo+"/manifests/"+im.tag, mtAcceptAll, ptBlob{sha(im.manifest), int64(len(im.manifest))}, true); err != nil {
		return err
	}
	if mode == "First" { // the config, then up to the layer's first byte
		if err := leanGet(s.addr, "/v2/"+repo+"/blobs/"+im.blobs[0].digest, "", im.blobs[0], true); err != nil {
			return err
		}
		return firstByte(s.addr, "/v2/"+repo+"/blobs/"+im.blobs[1].digest)
	}
	for _, bl := range im.blobs {
		if err := leanGet(s.addr, "/v2/"+repo+"/blobs/"+bl.digest, "", bl, verify); err != nil {
			return err
		}
	}
	return nil
}

// The pass-through floor of a cold pull (target "floor"): a helper process
// that answers each request by fetching it from the upstream and streaming
// the body to the client through a new file and sha256, in one loop: what
// any cache that stores and verifies must do at least. No fsync, no
// metadata, no hold-back, no coalescing.
const (
	floorUpstreamEnv = "ARCA_BENCH_FLOOR_UPSTREAM"
	floorAddrEnv     = "ARCA_BENCH_FLOOR_ADDR"
	floorDirEnv      = "ARCA_BENCH_FLOOR_DIR"
)

func servePassThrough(upstream string) {
	dir := os.Getenv(floorDirEnv)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequest(r.Method, "http://"+upstream+r.URL.RequestURI(), nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req.Header.Set("Accept", r.Header.Get("Accept"))
		resp, err := ptHTTP.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for _, k := range []string{"Content-Type", "Content-Length", "Docker-Content-Digest"} {
			if v := resp.Header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		f, err := os.CreateTemp(dir, "blob-")
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		defer f.Close()
		hs := sha256.New()
		// Plain writes (no sendfile or ReadFrom shortcuts): file, hash,
		// client, chunk by chunk.
		_, _ = io.CopyBuffer(io.MultiWriter(f, hs, w), struct{ io.Reader }{resp.Body}, make([]byte, 256<<10))
	})
	err := http.ListenAndServe(os.Getenv(floorAddrEnv), h)
	fmt.Fprintln(os.Stderr, "pass-through floor:", err)
	os.Exit(1)
}

var ptHTTP = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Minute}

// firstByte GETs path and returns once the first body byte arrived.
func firstByte(addr, path string) error {
	resp, err := ptHTTP.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1)); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s%s: status %d, %v", addr, path, resp.StatusCode, err)
	}
	return nil
}

// leanGet GETs path into io.Discard (or a hash when verify is set) and
// checks status and size.
func leanGet(addr, path, accept string, want ptBlob, verify bool) error {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := ptHTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var sink io.Writer = io.Discard
	h := sha256.New()
	if verify {
		sink = h
	}
	n, err := io.CopyBuffer(sink, resp.Body, make([]byte, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK || n != want.size {
		return fmt.Errorf("GET %s%s: status %d, %d of %d bytes, %v", addr, path, resp.StatusCode, n, want.size, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); verify && got != want.digest {
		return fmt.Errorf("GET %s%s: digest %s, want %s", addr, path, got, want.digest)
	}
	return nil
}

// cold: every op pulls the big image through a freshly started, empty
// server (start-up excluded from the time).
func (e *ptBench) cold(b *testing.B, tg, mode string) { e.coldOn(b, tg, mode, e.up.Host, e.big) }

// coldOn pulls im through a fresh tg whose upstream is at upstream.
func (e *ptBench) coldOn(b *testing.B, tg, mode, upstream string, im *ptImage) {
	b.SetBytes(im.size())
	for b.Loop() {
		b.StopTimer()
		s := e.start(b, tg, upstream)
		b.StartTimer()
		err := e.pull(b, s, im, mode, false)
		b.StopTimer()
		if err == nil && tg != "direct" { // what was cached is right
			err = e.pull(b, s, im, "Lean", true)
		}
		s.stop()
		if err != nil {
			b.Fatalf("%s: %v", tg, err)
		}
		b.StartTimer()
	}
}

// warm: the server is filled (and checked) first; every op pulls again.
func (e *ptBench) warm(b *testing.B, tg, mode string) {
	s := e.start(b, tg, e.up.Host)
	defer s.stop()
	for range 2 {
		if err := e.pull(b, s, e.big, "Lean", true); err != nil {
			b.Fatalf("%s: fill: %v", tg, err)
		}
	}
	if tg == "plainfile" {
		b.SetBytes(e.big.blobs[1].size)
	} else {
		b.SetBytes(e.big.size())
	}
	for b.Loop() {
		if err := e.pull(b, s, e.big, mode, false); err != nil {
			b.Fatalf("%s: %v", tg, err)
		}
	}
}

// wave: n lean clients pull the wave image at once through a fresh arca;
// reports the wall time, upstream GETs per blob and arca's peak RSS.
func (e *ptBench) runWave(b *testing.B, n int, wan bool) {
	upstream := e.up.Host
	if wan {
		upstream = e.wan.addr
	}
	var walls, gets []float64
	var peak int64
	for b.Loop() {
		b.StopTimer()
		s := e.start(b, "arca", upstream)
		before := e.blobGETs()
		start := make(chan struct{})
		errs := make(chan error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				errs <- e.pull(b, s, e.wave, "Lean", i == 0)
			})
		}
		b.StartTimer()
		t0 := time.Now()
		close(start)
		wg.Wait()
		walls = append(walls, time.Since(t0).Seconds())
		b.StopTimer()
		close(errs)
		for err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
		gets = append(gets, float64(e.blobGETs()-before)/float64(len(e.wave.blobs)))
		rss, err := vmHWM(s.pid)
		if err != nil {
			b.Fatal(err)
		}
		peak = max(peak, rss)
		s.stop()
		b.StartTimer()
	}
	b.ReportMetric(mean(walls), "wall-s")
	b.ReportMetric(mean(gets), "upstream-GETs/blob")
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
}

func (e *ptBench) blobGETs() int {
	n := 0
	for _, bl := range e.wave.blobs {
		n += upstreamGETs(e.up, "/blobs/"+bl.digest)
	}
	return n
}

func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(max(len(xs), 1))
}

// vmHWM reads a process's peak resident set size, in bytes.
func vmHWM(pid int) (int64, error) { return procStatus(pid, "VmHWM") }

// procStatus reads one kB field of /proc/PID/status (VmRSS, VmHWM,
// RssAnon, RssFile, ...), in bytes.
func procStatus(pid int, field string) (int64, error) {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// startBenchProc is startProc for a benchmark: it fails b.
func startBenchProc(b *testing.B, name, readyPath string, cmdFor func(addr string) (*exec.Cmd, error)) *proc {
	b.Helper()
	p, err := startProc(name, readyPath, cmdFor)
	if err != nil {
		b.Fatal(err)
	}
	return p
}

// startDistProxy runs distribution (bin) as a pull-through cache of
// upstream, with a fresh filesystem store unless storage (the driver part
// of the storage section) names another; it returns the process and its
// directory.
func startDistProxy(b *testing.B, bin, upstream, storage string) (*proc, string) {
	b.Helper()
	dir, err := os.MkdirTemp("", "dist-proxy-")
	if err != nil {
		b.Fatal(err)
	}
	if storage == "" {
		storage = fmt.Sprintf("  filesystem:\n    rootdirectory: %s\n", filepath.Join(dir, "data"))
	}
	return startBenchProc(b, filepath.Base(bin), "/v2/", func(addr string) (*exec.Cmd, error) {
		yml := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
%shttp:
  addr: %s
proxy:
  remoteurl: http://%s
`, storage, addr, upstream)
		cfg := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "serve", cfg)
		cmd.Stderr = os.Stderr
		return cmd, nil
	}), dir
}

// throttleProxy is a TCP proxy whose upstream-to-client direction is
// limited to rate bytes/s per connection: a registry across a WAN link.
type throttleProxy struct {
	addr string
	rate int64
	to   string
}

func startThrottleProxy(b *testing.B, to string, rate int64) *throttleProxy {
	b.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	p := &throttleProxy{addr: ln.Addr().String(), rate: rate, to: to}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.handle(c)
		}
	}()
	return p
}

func (p *throttleProxy) handle(c net.Conn) {
	defer c.Close()
	u, err := net.Dial("tcp", p.to)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		_, _ = io.Copy(u, c)
		u.(*net.TCPConn).CloseWrite()
	}()
	buf := make([]byte, 32<<10)
	var next time.Time // when the link is free again
	for {
		n, err := u.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
			// An idle link does not save up bandwidth for a burst, but
			// oversleeping (a busy machine) may be caught up on a little.
			next = later(next, time.Now().Add(-50*time.Millisecond)).Add(time.Duration(int64(n) * int64(time.Second) / p.rate))
			time.Sleep(time.Until(next))
		}
		if err != nil {
			return
		}
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
