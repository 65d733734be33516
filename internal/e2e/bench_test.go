package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/freeport"
)

// Benchmarks comparing arca with Debian's docker-registry (CNCF
// distribution 2.8) and a plain file served by http.ServeContent, all on
// loopback in the same run. scripts/bench.sh runs them and prints ratios.

const benchBlobSize = 256 << 20

// benchEnv is shared by the benchmarks of one `go test -bench` run and
// torn down by TestMain.
type benchEnv struct {
	dir        string
	blobPath   string
	blobDigest string
	manifest   []byte
	arca       *proc
	dist       *proc // Debian's docker-registry (distribution 2.8)
	dist3      *proc // distribution v3 (.tools/bin/registry)
	plainAddr  string
	plain      *proc
}

const (
	plainFileEnv = "ARCA_BENCH_PLAIN_FILE"
	plainAddrEnv = "ARCA_BENCH_PLAIN_ADDR"
)

// servePlainFile serves one file with http.ServeContent: the practical
// upper bound for serving a blob over HTTP from Go. /blob passes the
// *os.File (net/http uses sendfile); /blob-copy hides it, so the body goes
// through read/write copies, to show which path is faster here.
func servePlainFile(path string) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		var rs io.ReadSeeker = f
		if r.URL.Path == "/blob-copy" {
			rs = struct{ io.ReadSeeker }{f}
		}
		http.ServeContent(w, r, "blob", time.Time{}, rs)
	})
	err := http.ListenAndServe(os.Getenv(plainAddrEnv), h)
	fmt.Fprintln(os.Stderr, "plain file server:", err)
	os.Exit(1)
}

const benchRepo = "bench/repo"

var (
	benchOnce sync.Once
	benchErr  error
	theBench  *benchEnv
)

func getBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	benchOnce.Do(func() { theBench, benchErr = newBenchEnv(b) })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	if theBench == nil || theBench.plain == nil {
		b.Fatal("benchmark setup failed earlier")
	}
	return theBench
}

func benchTeardown() {
	if theBench == nil {
		return
	}
	theBench.arca.stop()
	theBench.dist.stop()
	theBench.dist3.stop()
	theBench.plain.stop()
	os.RemoveAll(theBench.dir)
}

func newBenchEnv(b *testing.B) (*benchEnv, error) {
	dir, err := os.MkdirTemp("", "arca-bench-")
	if err != nil {
		return nil, err
	}
	e := &benchEnv{dir: dir, blobPath: filepath.Join(dir, "blob")}
	if e.blobDigest, err = writeRandomFile(e.blobPath, benchBlobSize, [32]byte{1, 2, 3}); err != nil {
		return nil, err
	}
	if e.arca, err = startArcaProc(filepath.Join(dir, "arca-data")); err != nil {
		return e, err
	}
	if e.dist, err = startDistribution(dir, "distribution"); err != nil {
		return e, err
	}
	if e.dist3, err = startDistribution(dir, "distribution3"); err != nil {
		return e, err
	}
	im := newImage(b, 4242, "amd64", 4<<10)
	e.manifest = im.Manifest
	for _, p := range []*proc{e.arca, e.dist, e.dist3} {
		if err := pushBlobFile(p.addr, benchRepo, e.blobPath, e.blobDigest); err != nil {
			return e, fmt.Errorf("%s: %w", p.name, err)
		}
		target := &arca{&arcaproc.Proc{Addr: p.addr}}
		target.pushImage(b, benchRepo, "v1", im)
	}
	// The plain file server runs in its own process (this test binary
	// re-executed), like the registries, so it does not share the
	// benchmark client's CPU budget and runtime.
	if e.plain, err = startProc("plainfile", "/blob", func(addr string) (*exec.Cmd, error) {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), plainFileEnv+"="+e.blobPath, plainAddrEnv+"="+addr)
		cmd.Stderr = os.Stderr
		return cmd, nil
	}); err != nil {
		return e, err
	}
	e.plainAddr = e.plain.addr
	return e, nil
}

// writeRandomFile writes size random bytes (a stream keyed by seed) to
// path and returns their digest.
func writeRandomFile(path string, size int, seed [32]byte) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
	if _, err := io.CopyN(w, rand.NewChaCha8(seed), int64(size)); err != nil {
		return "", err
	}
	if err := w.Flush(); err != nil {
		return "", err
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), f.Close()
}

// pushBlobFile uploads a file with POST + monolithic PUT, streaming it.
func pushBlobFile(addr, repo, path, digest string) error {
	resp, err := http.Post("http://"+addr+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		return err
	}
	drain(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("POST upload: %s", resp.Status)
	}
	loc, err := resp.Location()
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, _ := f.Stat()
	req, _ := http.NewRequest(http.MethodPut, withDigest(loc.String(), digest), f)
	req.ContentLength = fi.Size()
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return fmt.Errorf("PUT blob: %s %s", resp.Status, body)
	}
	return nil
}

// proc is a server process started for benchmarks (no testing.TB: it
// outlives single benchmark runs).
type proc struct {
	name string
	addr string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// startProc starts the command cmdFor builds for a fresh loopback
// address and waits for readyPath there to answer 200; when the process
// exits saying another took that address, it starts again on another.
func startProc(name, readyPath string, cmdFor func(addr string) (*exec.Cmd, error)) (*proc, error) {
	var p *proc
	_, err := freeport.Retry(func(addr string) error {
		cmd, err := cmdFor(addr)
		if err != nil {
			return err
		}
		p, err = startProcAt(name, addr, readyPath, cmd)
		return err
	})
	return p, err
}

func startProcAt(name, addr, readyPath string, cmd *exec.Cmd) (*proc, error) {
	// Own process group; killed if the test binary dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &syncBuffer{} // a copy of the output, to tell a taken port
	if cmd.Stderr == nil {
		cmd.Stderr = out
	} else {
		cmd.Stderr = io.MultiWriter(cmd.Stderr, out)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, addr: addr, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	// First that it is this process that listens on addr: another that
	// took the port could answer readyPath as well.
	err := freeport.WaitListening(cmd.Process.Pid, addr, 30*time.Second, p.done)
	if err == nil {
		err = arcaproc.WaitReady("http://"+addr+readyPath, 30*time.Second, p.done)
	}
	switch {
	case errors.Is(err, freeport.ErrInUse), errors.Is(err, freeport.ErrExited) && freeport.InUse(out.String()):
		p.stop()
		return nil, fmt.Errorf("%s on %s: %w", name, addr, freeport.ErrInUse)
	case err != nil:
		p.stop()
		return nil, fmt.Errorf("%s not ready on %s: %v\n%s", name, addr, err, out.String())
	}
	return p, nil
}

func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// peakRSS is the process's high-water resident set (VmHWM), in bytes.
func (p *proc) peakRSS() (int64, error) { return vmHWM(p.cmd.Process.Pid) }

func startArcaProc(dataDir string) (*proc, error) {
	return startProc("arca", "/readyz", func(addr string) (*exec.Cmd, error) {
		cmd := exec.Command(arcaBin, "serve", "--addr", addr, "--data-dir", dataDir, "--log-level", "warn", "--insecure-open")
		cmd.Stderr = benchLog(dataDir + ".log")
		return cmd, nil
	})
}

// startDistribution runs a distribution registry with a filesystem store
// and its in-memory blob descriptor cache (its usual production setup):
// "distribution" is Debian's docker-registry (2.8), "distribution3" is v3
// (.tools/bin/registry, installed by scripts/bench-pullthrough.sh).
func startDistribution(dir, name string) (*proc, error) {
	bin, err := exec.LookPath("docker-registry")
	if name == "distribution3" {
		bin, err = exec.LookPath("registry")
	}
	if err != nil {
		return nil, fmt.Errorf("%s not installed: run scripts/test.sh and scripts/bench-pullthrough.sh to install it", name)
	}
	return startProc(name, "/v2/", func(addr string) (*exec.Cmd, error) {
		cfg := filepath.Join(dir, name+".yml")
		yml := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, name+"-data"), addr)
		if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "serve", cfg)
		cmd.Stderr = benchLog(filepath.Join(dir, name+".log"))
		return cmd, nil
	})
}

// benchLog is where a benchmarked server's output goes (os.Stderr if the
// file cannot be created), so it does not clutter the results.
func benchLog(path string) io.Writer {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return os.Stderr
	}
	return f
}

// target is one server under benchmark.
type target struct{ name, addr, blobPath string }

func (e *benchEnv) blobTargets() []target {
	p := "/v2/" + benchRepo + "/blobs/" + e.blobDigest
	return []target{{"arca", e.arca.addr, p}, {"distribution", e.dist.addr, p}, {"distribution3", e.dist3.addr, p}, {"plainfile", e.plainAddr, "/blob"},
		{"plainfile-copy", e.plainAddr, "/blob-copy"}}
}

// BenchmarkBlobDownload: warm download of a 256 MiB blob by one client.
func BenchmarkBlobDownload(b *testing.B) {
	e := getBenchEnv(b)
	for _, tg := range e.blobTargets() {
		b.Run(tg.name, func(b *testing.B) {
			c := newLeanClient(tg.addr)
			defer c.Close()
			// Warm-up download, verified byte for byte.
			h := sha256.New()
			if st, n, err := c.get(tg.blobPath, "", h); err != nil || st != 200 || n != benchBlobSize ||
				"sha256:"+hex.EncodeToString(h.Sum(nil)) != e.blobDigest {
				b.Fatalf("warm-up download from %s: status %d, %d bytes, %v", tg.name, st, n, err)
			}
			b.SetBytes(benchBlobSize)
			for b.Loop() {
				if st, n, err := c.get(tg.blobPath, "", nil); err != nil || st != 200 || n != benchBlobSize {
					b.Fatalf("download: status %d, %d bytes, %v", st, n, err)
				}
			}
		})
	}
}

// BenchmarkManifestGet: manifest GETs by tag over 64 concurrent
// keep-alive connections.
func BenchmarkManifestGet(b *testing.B) {
	e := getBenchEnv(b)
	for _, p := range []*proc{e.arca, e.dist, e.dist3} {
		b.Run(p.name, func(b *testing.B) {
			b.SetParallelism((64 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
			path := "/v2/" + benchRepo + "/manifests/v1"
			b.RunParallel(func(pb *testing.PB) {
				c := newLeanClient(p.addr)
				defer c.Close()
				for pb.Next() {
					if st, n, err := c.get(path, mtOCIManifest, nil); err != nil || st != 200 || n != int64(len(e.manifest)) {
						b.Errorf("manifest GET: status %d, %d bytes, %v", st, n, err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}

// BenchmarkPeakRSS32: peak RSS of a freshly started server while 32
// clients download the 256 MiB blob at once. One op = one such wave.
func BenchmarkPeakRSS32(b *testing.B) {
	e := getBenchEnv(b)
	for _, name := range []string{"arca", "distribution"} {
		b.Run(name, func(b *testing.B) {
			p := restartFresh(b, e, name)
			for b.Loop() {
				var wg sync.WaitGroup
				for range 32 {
					wg.Go(func() {
						c := newLeanClient(p.addr)
						defer c.Close()
						path := "/v2/" + benchRepo + "/blobs/" + e.blobDigest
						if st, n, err := c.get(path, "", nil); err != nil || st != 200 || n != benchBlobSize {
							b.Errorf("download: status %d, %d bytes, %v", st, n, err)
						}
					})
				}
				wg.Wait()
			}
			rss, err := p.peakRSS()
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
		})
	}
}

// restartFresh restarts a server so its VmHWM covers only this benchmark.
func restartFresh(b *testing.B, e *benchEnv, name string) *proc {
	b.Helper()
	var err error
	switch name {
	case "arca":
		e.arca.stop()
		e.arca, err = startArcaProc(filepath.Join(e.dir, "arca-data"))
		if err != nil {
			b.Fatal(err)
		}
		return e.arca
	default:
		e.dist.stop()
		e.dist, err = startDistribution(e.dir, "distribution")
		if err != nil {
			b.Fatal(err)
		}
		return e.dist
	}
}
