package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/arcacache/arca/internal/auth"
	"github.com/arcacache/arca/internal/buildinfo"
	"github.com/arcacache/arca/internal/config"
	"github.com/arcacache/arca/internal/registry"
	"github.com/arcacache/arca/internal/sdnotify"
	"github.com/arcacache/arca/internal/server"
	"github.com/arcacache/arca/internal/tracing"
)

// registryNameRe is ACR's rule for registry names.
var registryNameRe = regexp.MustCompile(`^[a-zA-Z0-9]{5,50}$`)

// DefaultRegistryName names the registry that exists out of the box.
const DefaultRegistryName = "default"

func newServeCmd(env Env) *cobra.Command {
	var (
		opts       server.Options
		configPath string
		logFormat  string
		logLevel   string
		addrFile   string
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Long: `Run the arca registry with embedded storage: blobs on the filesystem under
--data-dir and metadata in an embedded SQLite database in the same directory,
or metadata in PostgreSQL with --metadata postgres://USER@HOST:PORT/DB (the
schema is migrated at start, under a lock; see also arca migrate).

Every setting can also come from the YAML file given by --config (the key is
the flag name, e.g. "data-dir: /var/lib/arca") or from an environment
variable ARCA_<NAME> (e.g. ARCA_DATA_DIR). Flags win over the environment,
which wins over the file.`,
		Example: `  arca serve
  arca serve --addr 127.0.0.1:5000 --data-dir /tmp/arca
  arca serve --addr 127.0.0.1:0 --addr-file /run/arca/addr
  PGPASSWORD=... arca serve --metadata 'postgres://arca@db:5432/arca?sslmode=require'
  ARCA_ADDR=:5000 arca serve --config /etc/arca/arca.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.Apply(cmd.Flags(), configPath); err != nil {
				return err
			}
			if err := checkSettings(cmd.Flags()); err != nil {
				return err
			}
			if !registryNameRe.MatchString(opts.RegistryName) {
				return fmt.Errorf("--registry-name %q: must be 5 to 50 alphanumeric characters", opts.RegistryName)
			}
			opts.RegistryName = strings.ToLower(opts.RegistryName)
			log, err := newLogger(env, logFormat, logLevel)
			if err != nil {
				return err
			}
			opts.Logger = log
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			notifySystemd(ctx, env, &opts)
			if addrFile != "" {
				defer reportAddr(addrFile, &opts)()
			}
			tp, shutdownTracing, err := tracing.Setup(ctx, env.Getenv, buildinfo.Read().Version)
			if err != nil {
				return err
			}
			defer func() {
				// Flush the spans still buffered, within a bound.
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if err := shutdownTracing(sctx); err != nil {
					log.Warn("tracing shutdown", "err", err)
				}
			}()
			opts.TracerProvider = tp
			srv, err := server.New(ctx, opts)
			if err != nil {
				return err
			}
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML configuration file")
	f.StringVar(&opts.Addr, "addr", "127.0.0.1:5000", "address to listen on (HOST:PORT; port 0 picks a free one, see --addr-file)")
	f.StringVar(&addrFile, "addr-file", "", "once arca serves, write the address it listens on (HOST:PORT, the real port when --addr has port 0) to this file; removed at exit")
	f.StringVar(&opts.DataDir, "data-dir", "./arca-data", "directory holding all state (blobs and metadata)")
	f.StringVar(&opts.Blobs, "blobs", "", "where blobs live: empty for the filesystem under --data-dir, or s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the shared AWS files)")
	f.DurationVar(&opts.BlobRedirect, "blob-redirect", 0, "answer blob GETs with a redirect to a presigned URL valid this long, when the blob store can presign (S3); 0 streams them")
	f.StringVar(&opts.Metadata, "metadata", "", "metadata store: a postgres:// URL (any libpq URL; password from PGPASSWORD or ~/.pgpass rather than the URL); empty: embedded SQLite under --data-dir")
	f.StringVar(&opts.RegistryName, "registry-name", DefaultRegistryName, "name of the default registry (5 to 50 alphanumerics)")
	f.StringVar(&opts.TLSCert, "tls-cert", "", "TLS certificate file (PEM); serves HTTPS with --tls-key")
	f.StringVar(&opts.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	f.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may take to finish on SIGTERM")
	f.StringVar(&opts.PprofAddr, "pprof-addr", "", "serve Go profiles (net/http/pprof) on this loopback HOST:PORT; off when empty")
	f.DurationVar(&opts.UploadMaxAge, "upload-max-age", 24*time.Hour, "abandoned uploads older than this are purged")
	f.DurationVar(&opts.GC.Interval, "gc-interval", time.Hour, "run garbage collection (unreferenced blobs, untagged manifests under a retention policy, abandoned uploads) this often; 0: only on demand (arca gc)")
	f.DurationVar(&opts.GC.Grace, "gc-grace", time.Hour, "garbage collection deletes a blob only once it stayed unreferenced this long: longer than the longest pull or blob commit")
	f.DurationVar(&opts.ReadHeaderTimeout, "read-header-timeout", 30*time.Second, "a client must send its request headers within this (slow-client protection)")
	f.DurationVar(&opts.IdleTimeout, "idle-timeout", 2*time.Minute, "an idle keep-alive connection is closed after this")
	f.StringVar(&opts.MetricsAddr, "metrics-addr", "", "serve /metrics on this address (HOST:PORT) instead of --addr, e.g. a private interface")
	f.DurationVar(&opts.UploadSessionLifetime, "upload-session-lifetime", 24*time.Hour, "longest an upload session may take from its start (chunks after it are refused); 0: no limit")
	f.IntVar(&opts.MaxUploadsPerIdentity, "max-uploads-per-identity", 64, "most upload sessions one identity (admin user, token, principal) may have open, started within --upload-max-age; 0: no cap")
	f.DurationVar(&opts.AccessTokenTTL, "access-token-ttl", auth.DefaultAccessTTL, "lifetime of the data plane's JWT access tokens")
	f.DurationVar(&opts.RefreshTokenTTL, "refresh-token-ttl", auth.DefaultRefreshTTL, "lifetime of refresh tokens (offline_token=true, access_type=offline)")
	f.BoolVar(&opts.InsecureOpen, "insecure-open", false, "turn data-plane access control OFF: anyone may pull, push and delete (only with a loopback --addr; for trials and tests)")
	f.DurationVar(&opts.StorageMetricsMaxAge, "storage-metrics-max-age", time.Minute, "how old the arca_storage_* gauges may get before a scrape recomputes them (grouped scans of the metadata)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&opts.AccessLog, "access-log", true, "log one line per request at info level (method, route, repository, status, bytes, duration, cache result, upstream; credential-like query values redacted)")
	addManagementFlags(f, &opts.Management, env)
	addPullThroughFlags(f, &opts.PullThrough)
	addSyncFlags(f, &opts.Sync)
	addLifecycleFlags(f, &opts.Lifecycle)
	addClusterFlags(f, &opts.Cluster)
	addLimitFlags(f, &opts.Limits)
	return cmd
}

// addLimitFlags adds `arca serve`'s bounds on clients, uploads and disk use.
func addLimitFlags(f *pflag.FlagSet, o *server.LimitOptions) {
	o.MaxBlobSize = registry.DefaultMaxBlobSize
	f.Var((*config.Size)(&o.MaxBlobSize), "max-blob-size", "largest blob one upload may push (bytes, or with a unit: 512MiB, 32GiB)")
	o.MinFreeSpace = config.FreeSpace{Bytes: 1 << 30, Percent: 5}
	f.Var(&o.MinFreeSpace, "min-free-space", `free space kept on --data-dir: below it /readyz fails and pushes are refused with 507 while pulls go on; a size, a percentage of the file system, or both ("1GiB,5%": whichever is smaller); "0" turns it off`)
	f.DurationVar(&o.BodyIdleTimeout, "body-idle-timeout", 30*time.Second, "a request body that sends nothing for this long fails (a stalled upload)")
	o.BodyMinRate = 1 << 10
	f.Var((*config.Size)(&o.BodyMinRate), "body-min-rate", "least bytes per second a request body must send over each --body-idle-timeout window")
	f.IntVar(&o.MaxUploadsPerClient, "max-uploads-per-client", 32, "blob upload requests one client address may have in progress at once")
}

// zeroTurnsOff lists the duration settings for which 0 means "off"; every
// other duration must be positive.
var zeroTurnsOff = map[string]bool{"negative-cache-ttl": true, "blob-redirect": true, "gc-interval": true}

// positiveInts lists the integer settings that must be at least 1.
var positiveInts = map[string]bool{"max-uploads-per-client": true, "sync-concurrency": true, "max-cache-rules": true}

// checkSettings refuses nonsensical durations and counts with a one-line
// reason, before anything starts.
func checkSettings(fs *pflag.FlagSet) error {
	var errs []string
	fs.VisitAll(func(f *pflag.Flag) {
		switch f.Value.Type() {
		case "duration":
			d, err := time.ParseDuration(f.Value.String())
			switch {
			case err != nil:
				errs = append(errs, fmt.Sprintf("--%s %s: %v", f.Name, f.Value, err))
			case d < 0:
				errs = append(errs, fmt.Sprintf("--%s %s: must not be negative", f.Name, f.Value))
			case d == 0 && !zeroTurnsOff[f.Name]:
				errs = append(errs, fmt.Sprintf("--%s 0s: must be positive", f.Name))
			}
		case "int":
			if n, err := strconv.Atoi(f.Value.String()); positiveInts[f.Name] && (err != nil || n < 1) {
				errs = append(errs, fmt.Sprintf("--%s %s: must be at least 1", f.Name, f.Value))
			}
		}
	})
	if b := fs.Lookup("max-blob-size"); b != nil && b.Value.String() == "0" {
		errs = append(errs, "--max-blob-size 0: must be positive")
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid setting: %s", strings.Join(errs, "; "))
	}
	return nil
}

func newLogger(env Env, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(env.Stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(env.Stderr, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: must be text or json", format)
}

// reportAddr writes the listening address to path once arca serves. The
// file appears whole (written aside, then renamed): whoever waits for it
// reads a complete address, and its presence means arca accepts requests.
// The returned func, for the end of serve, removes the file if it was
// written (a start that failed, say on a taken port, leaves alone what
// another arca wrote there).
func reportAddr(path string, opts *server.Options) (remove func()) {
	ready := opts.Ready
	var written bool // Ready runs in Run, on serve's goroutine
	opts.Ready = func(addr net.Addr) {
		if err := writeFileAtomic(path, addr.String()+"\n"); err != nil {
			opts.Logger.Error("could not write --addr-file", "path", path, "err", err)
		} else {
			written = true
		}
		if ready != nil {
			ready(addr)
		}
	}
	return func() {
		if written {
			_ = os.Remove(path)
		}
	}
}

func writeFileAtomic(path, content string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after the rename: nothing left to remove
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// notifySystemd tells a Type=notify unit's systemd (when $NOTIFY_SOCKET
// is set) that arca is ready once it listens, and that it is stopping
// when the shutdown signal comes.
func notifySystemd(ctx context.Context, env Env, opts *server.Options) {
	socket := env.Getenv("NOTIFY_SOCKET")
	if socket == "" {
		return
	}
	notify := func(state string) {
		if err := sdnotify.Notify(socket, state); err != nil {
			opts.Logger.Warn("systemd notification failed", "state", state, "err", err)
		}
	}
	ready := opts.Ready
	opts.Ready = func(addr net.Addr) {
		if ready != nil {
			ready(addr)
		}
		notify(sdnotify.Ready)
		go func() {
			<-ctx.Done()
			notify(sdnotify.Stopping)
		}()
	}
}
