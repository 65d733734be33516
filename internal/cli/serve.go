package cli

import (
	"fmt"
	"log/slog"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/config"
	"github.com/arcacache/arca/internal/server"
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
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the registry",
		Long: `Run the arca registry with embedded storage: blobs on the filesystem under
--data-dir and metadata in an embedded SQLite database in the same directory.

Every setting can also come from the YAML file given by --config (the key is
the flag name, e.g. "data-dir: /var/lib/arca") or from an environment
variable ARCA_<NAME> (e.g. ARCA_DATA_DIR). Flags win over the environment,
which wins over the file.`,
		Example: `  arca serve
  arca serve --addr 127.0.0.1:5000 --data-dir /tmp/arca
  ARCA_ADDR=:5000 arca serve --config /etc/arca/arca.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.Apply(cmd.Flags(), configPath); err != nil {
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
			srv, err := server.New(ctx, opts)
			if err != nil {
				return err
			}
			return srv.Run(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "YAML configuration file")
	f.StringVar(&opts.Addr, "addr", "127.0.0.1:5000", "address to listen on (HOST:PORT)")
	f.StringVar(&opts.DataDir, "data-dir", "./arca-data", "directory holding all state (blobs and metadata)")
	f.StringVar(&opts.Blobs, "blobs", "", "where blobs live: empty for the filesystem under --data-dir, or s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the shared AWS files)")
	f.DurationVar(&opts.BlobRedirect, "blob-redirect", 0, "answer blob GETs with a redirect to a presigned URL valid this long, when the blob store can presign (S3); 0 streams them")
	f.StringVar(&opts.RegistryName, "registry-name", DefaultRegistryName, "name of the default registry (5 to 50 alphanumerics)")
	f.StringVar(&opts.TLSCert, "tls-cert", "", "TLS certificate file (PEM); serves HTTPS with --tls-key")
	f.StringVar(&opts.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	f.DurationVar(&opts.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "how long in-flight requests may take to finish on SIGTERM")
	f.StringVar(&opts.PprofAddr, "pprof-addr", "", "serve Go profiles (net/http/pprof) on this loopback HOST:PORT; off when empty")
	f.DurationVar(&opts.UploadMaxAge, "upload-max-age", 24*time.Hour, "abandoned uploads older than this are purged")
	f.DurationVar(&opts.StorageMetricsMaxAge, "storage-metrics-max-age", time.Minute, "how old the arca_storage_* gauges may get before a scrape recomputes them (grouped scans of the metadata)")
	f.StringVar(&logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&opts.AccessLog, "access-log", true, "log one line per request at info level (method, route, repository, status, bytes, duration, cache result, upstream; credential-like query values redacted)")
	addManagementFlags(f, &opts.Management, env)
	addPullThroughFlags(f, &opts.PullThrough)
	addSyncFlags(f, &opts.Sync)
	return cmd
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
