package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/armclient"
	"github.com/arcacache/arca/internal/backup"
	"github.com/arcacache/arca/internal/blobstore"
)

func newBackupCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	var to, dataDir, blobsURL string
	cmd := &cobra.Command{
		Use:   "backup --to DIR|s3://BUCKET/PREFIX",
		Short: "Back up a running server (or a data directory) into DIR or S3, copying only new blobs",
		Long: `Back up arca's state into DIR: a consistent snapshot of the metadata
database and every blob it records (manifests included). Blobs already in
DIR are not copied again, so running it again into the same DIR is an
incremental backup. The previous snapshot in DIR is replaced only once
every blob of the new one is there: an interrupted backup (Ctrl-C) leaves
the last complete one.

--to s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true keeps the
backup in an S3 bucket instead, with the URL parameters and credentials of
arca serve --blobs (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the shared
AWS files): PREFIX/arca.db, PREFIX/backup.json and the blobs under
PREFIX/blobs/. The bucket must exist.

Without --data-dir it reads a running server through the management API
(GET /arca/v1/backup/..., admin token). With --data-dir it reads that data
directory directly; a server may be running on it.

Progress goes to stderr; stdout has only the result (-o).`,
		Example: `  arca backup --to /backup/arca
  arca backup --data-dir /var/lib/arca --to /backup/arca -o none
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... arca backup --to 's3://backups/arca?endpoint=https://s3.example&region=eu-west-1'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to == "" {
				return errors.New("the following arguments are required: --to")
			}
			p, err := newPrinter(env.Stdout, o.output, o.query)
			if err != nil {
				return err
			}
			var src backup.Source
			if dataDir != "" {
				blobs, err := blobstore.Open(cmd.Context(), blobsURL, filepath.Join(dataDir, backup.BlobsDir))
				if err != nil {
					return err
				}
				if src, err = backup.NewStoreSource(dataDir, blobs); err != nil {
					return err
				}
			} else if src, err = o.remoteBackupSource(); err != nil {
				return err
			}
			return runLong(cmd, o, env, p, "backup", "the last complete backup in "+to+" is intact; run it again to go on", func(ctx context.Context, pr backup.Progress) (backup.Result, error) {
				return backup.Backup(ctx, src, to, pr)
			})
		},
	}
	o.addFlags(cmd.Flags())
	noTimeout(cmd, o)
	cmd.Flags().StringVar(&to, "to", "", "backup directory (created if missing), or s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "back up this data directory directly instead of a running server")
	cmd.Flags().StringVar(&blobsURL, "blobs", "", "with --data-dir: where that server keeps its blobs (its --blobs; empty: in the data directory)")
	return cmd
}

func newRestoreCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	var from, dataDir string
	cmd := &cobra.Command{
		Use:   "restore --from DIR|s3://BUCKET/PREFIX --data-dir DIR",
		Short: "Restore a backup into a new data directory, verifying every blob",
		Long: `Restore the backup in --from (a directory, or the s3:// URL it was backed
up to, with the same credentials) into --data-dir, which must not exist or
be empty (arca is not running on it). Every blob's digest and size is
verified while it is copied; a corrupt backup is refused naming the blob
that failed, and nothing is left in --data-dir. Then start arca serve on
--data-dir: it migrates a backup from an older release forward.`,
		Example: `  arca restore --from /backup/arca --data-dir /var/lib/arca
  arca restore --from 's3://backups/arca?endpoint=https://s3.example&region=eu-west-1' --data-dir /var/lib/arca`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if from == "" || dataDir == "" {
				return errors.New("the following arguments are required: --from, --data-dir")
			}
			p, err := newPrinter(env.Stdout, o.output, o.query)
			if err != nil {
				return err
			}
			return runLong(cmd, o, env, p, "restore", "nothing was written to "+dataDir, func(ctx context.Context, pr backup.Progress) (backup.Result, error) {
				return backup.Restore(ctx, from, dataDir, pr)
			})
		},
	}
	cmd.Flags().StringVarP(&o.output, "output", "o", "json", outputUsage())
	cmd.Flags().StringVar(&from, "from", "", "backup directory, or s3://BUCKET/PREFIX?endpoint=URL&region=R&path-style=true")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "new data directory to restore into")
	return cmd
}

// noTimeout makes --timeout default to none: a backup takes as long as
// its bytes take.
func noTimeout(cmd *cobra.Command, o *clientOpts) {
	f := cmd.Flags().Lookup("timeout")
	f.DefValue, o.timeout = "0s", 0
}

// runLong runs a long operation with progress on stderr, stopping cleanly
// on Ctrl-C or SIGTERM and saying what was done.
func runLong(cmd *cobra.Command, o *clientOpts, env Env, p *printer, name, onInterrupt string, run func(context.Context, backup.Progress) (backup.Result, error)) error {
	ctx, cancel := o.context(cmd)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	pr := newProgress(env.Stderr, name)
	res, err := run(ctx, pr)
	pr.Close()
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			fmt.Fprintf(env.Stderr, "%s: interrupted after copying %d of %d blobs (%d bytes); %s\n",
				name, res.CopiedBlobs, res.Blobs, res.CopiedBytes, onInterrupt)
			return &ExitError{Code: 130, Err: fmt.Errorf("%s interrupted", name)}
		}
		return err
	}
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	return p.print(v)
}

// remoteBackupSource reads a running server's state through the
// management API.
func (o *clientOpts) remoteBackupSource() (backup.Source, error) {
	endpoint, token, err := o.credentials()
	if err != nil {
		return nil, err
	}
	// No overall timeout: blobs take as long as their bytes; the command's
	// context bounds it.
	c, err := armclient.New(endpoint, token, armclient.Options{HTTPClient: o.httpClient(0), UserAgent: "arca-cli"})
	if err != nil {
		return nil, err
	}
	return remoteSource{c}, nil
}

type remoteSource struct{ c *armclient.Client }

func (s remoteSource) SnapshotTo(ctx context.Context, path string) error {
	rc, err := s.c.Stream(ctx, "/arca/v1/backup/metadata")
	if err != nil {
		return fmt.Errorf("metadata snapshot from %s: %w", s.c.Endpoint(), authHint(err))
	}
	defer rc.Close()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		f.Close()
		return fmt.Errorf("metadata snapshot from %s: %w", s.c.Endpoint(), err)
	}
	return errors.Join(f.Sync(), f.Close())
}

func (s remoteSource) OpenBlob(ctx context.Context, d digest.Digest) (io.ReadCloser, error) {
	rc, err := s.c.Stream(ctx, "/arca/v1/backup/blobs/"+d.String())
	return rc, authHint(err)
}
