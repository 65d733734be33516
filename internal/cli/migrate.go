package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/backup"
	"github.com/arcacache/arca/internal/blobstore"
	"github.com/arcacache/arca/internal/config"
	"github.com/arcacache/arca/internal/content"
	"github.com/arcacache/arca/internal/metadata"
)

func newMigrateCmd(env Env) *cobra.Command {
	var spec, dataDir string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Migrate the metadata store's schema to this arca's version",
		Long: `Apply the pending schema migrations of the metadata store: the embedded
database under --data-dir, or the PostgreSQL database --metadata names.
arca serve does the same at start; migrate lets an upgrade migrate first,
with the servers stopped or (PostgreSQL) while replicas wait on the same
migration lock. A store migrated by a newer arca is refused.

Settings also come from ARCA_METADATA and ARCA_DATA_DIR, as for serve.`,
		Example: `  arca migrate --data-dir /var/lib/arca
  PGPASSWORD=... arca migrate --metadata 'postgres://arca@db:5432/arca?sslmode=require'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := config.Apply(cmd.Flags(), ""); err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			s, err := metadata.Open(ctx, spec, dataDir)
			if err != nil {
				return err
			}
			defer s.Close()
			v, err := s.SchemaVersion(ctx)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "metadata (%s) at schema version %d\n", s.Backend(), v)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec, "metadata", "", "metadata store: a postgres:// URL; empty: the embedded database under --data-dir")
	f.StringVar(&dataDir, "data-dir", "./arca-data", "data directory of the embedded database")
	return cmd
}

func newCopyStoreCmd(env Env) *cobra.Command {
	var fromMeta, fromDir, toMeta, toDir, fromBlobs, toBlobs string
	var metadataOnly bool
	cmd := &cobra.Command{
		Use:   "copy-store --from-data-dir DIR (--to-data-dir DIR | --to-metadata URL) [--to-blobs URL | --metadata-only]",
		Short: "Copy an instance's blobs and metadata into other stores (e.g. embedded to PostgreSQL + S3)",
		Long: `Copy every metadata record (repositories, manifests, tags, blob links,
cache rules, credential sets, sync state, operations, rate limits) from one
store into another, both migrated to this arca's schema first. Each store is
the embedded database of a data directory (--from-data-dir, --to-data-dir)
or a PostgreSQL database (--from-metadata, --to-metadata).

Rows are upserted in batches, one transaction each: an interrupted copy
resumes by running the same command again. Stop the source's server before
the last run (a row deleted at the source after it was copied stays).

Blobs are copied first (unless --metadata-only), from --from-blobs or the
source data directory's blobs/ to --to-blobs or the destination data
directory's blobs/, every one through the verifying ingest: a blob whose
bytes do not match its digest stops the copy, naming it. Blobs the
destination holds already are skipped, so a rerun resumes.`,
		Example: `  PGPASSWORD=... AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... arca copy-store --from-data-dir /var/lib/arca \
    --to-metadata 'postgres://arca@db/arca' --to-blobs 's3://bucket/arca?endpoint=https://s3.example'
  arca copy-store --from-data-dir /var/lib/arca --to-metadata 'postgres://arca@db/arca' --metadata-only`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (fromMeta == "") == (fromDir == "") || (toMeta == "") == (toDir == "") {
				return errors.New("name one source (--from-data-dir or --from-metadata) and one destination (--to-data-dir or --to-metadata)")
			}
			if fromDir != "" && toDir != "" && fromDir == toDir {
				return errors.New("source and destination are the same data directory")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if fromDir != "" {
				// Open would create an empty database: a mistyped source
				// must fail instead.
				if _, err := os.Stat(filepath.Join(fromDir, metadata.DBFile)); err != nil {
					return fmt.Errorf("--from-data-dir: %w", err)
				}
			}
			pr := newProgress(env.Stderr, "copy-store")
			defer pr.Close()
			interrupted := func(what string) error {
				pr.Close()
				fmt.Fprintf(env.Stderr, "copy-store: interrupted after %s; run the same command again to go on\n", what)
				return &ExitError{Code: 130, Err: errors.New("copy-store interrupted")}
			}
			if !metadataOnly {
				res, err := copyBlobs(ctx, pr, fromBlobs, fromDir, toBlobs, toDir)
				if err != nil {
					if ctx.Err() != nil {
						return interrupted(fmt.Sprintf("%d of %d blobs (%d copied, %d bytes)", res.Blobs, res.Total, res.CopiedBlobs, res.CopiedBytes))
					}
					return err
				}
				pr.Close()
				fmt.Fprintf(env.Stderr, "copy-store: blobs: %d (%d bytes), %d copied, %d already there\n", res.Blobs, res.Bytes, res.CopiedBlobs, res.Blobs-res.CopiedBlobs)
			}
			from, err := metadata.Open(ctx, fromMeta, fromDir)
			if err != nil {
				return fmt.Errorf("source: %w", err)
			}
			defer from.Close()
			to, err := metadata.Open(ctx, toMeta, toDir)
			if err != nil {
				return fmt.Errorf("destination: %w", err)
			}
			defer to.Close()
			total, err := metadata.CountCopyRows(ctx, from)
			if err != nil {
				return fmt.Errorf("source: %w", err)
			}
			pr.Phase("metadata rows", int(total), 0)
			rows := map[string]int64{}
			var tables []string // in copy order, for the summary
			err = metadata.Copy(ctx, from, to, func(table string, n int64) {
				if _, seen := rows[table]; !seen {
					tables = append(tables, table)
				}
				pr.Advance(int(n-rows[table]), 0)
				rows[table] = n
			})
			if err != nil {
				if ctx.Err() != nil {
					var done int64
					for _, n := range rows {
						done += n
					}
					return interrupted(fmt.Sprintf("copying %d of %d metadata rows", done, total))
				}
				return err
			}
			pr.Close()
			for _, t := range tables {
				fmt.Fprintf(env.Stderr, "copy-store: %s: %d rows\n", t, rows[t])
			}
			fmt.Fprintf(env.Stdout, "copied metadata from %s to %s\n", from.Backend(), to.Backend())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&fromDir, "from-data-dir", "", "source: the embedded database of this data directory")
	f.StringVar(&fromMeta, "from-metadata", "", "source: this postgres:// URL")
	f.StringVar(&toDir, "to-data-dir", "", "destination: the embedded database of this data directory")
	f.StringVar(&toMeta, "to-metadata", "", "destination: this postgres:// URL")
	f.StringVar(&fromBlobs, "from-blobs", "", "source blobs: this s3:// URL (default: the source data directory's)")
	f.StringVar(&toBlobs, "to-blobs", "", "destination blobs: this s3:// URL (default: the destination data directory's)")
	f.BoolVar(&metadataOnly, "metadata-only", false, "copy the metadata only")
	return cmd
}

// blobCopy is what copyBlobs did: content.CopyResult, and how many blobs
// the source held when it started.
type blobCopy struct {
	content.CopyResult
	Total int
}

// copyBlobs copies every blob from the source blob store to the
// destination's through the verifying ingest (content.CopyBlobs). A first
// listing counts the blobs and bytes the progress display counts towards.
func copyBlobs(ctx context.Context, pr *progress, fromBlobs, fromDir, toBlobs, toDir string) (blobCopy, error) {
	var res blobCopy
	if fromBlobs == "" && fromDir == "" {
		return res, errors.New("name the source blobs (--from-blobs, or --from-data-dir) or pass --metadata-only")
	}
	if toBlobs == "" && toDir == "" {
		return res, errors.New("name where the blobs go (--to-blobs, or --to-data-dir) or pass --metadata-only")
	}
	if fromBlobs == toBlobs && fromDir == toDir {
		return res, errors.New("source and destination blob stores are the same")
	}
	from, err := blobstore.Open(ctx, fromBlobs, filepath.Join(fromDir, backup.BlobsDir))
	if err != nil {
		return res, fmt.Errorf("source blobs: %w", err)
	}
	to, err := blobstore.Open(ctx, toBlobs, filepath.Join(toDir, backup.BlobsDir))
	if err != nil {
		return res, fmt.Errorf("destination blobs: %w", err)
	}
	var bytes int64
	err = from.List(ctx, func(_ digest.Digest, size int64) error {
		res.Total++
		bytes += size
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("source blobs: %w", err)
	}
	pr.Phase("blobs", res.Total, bytes)
	res.CopyResult, err = content.CopyBlobs(ctx, from, to, func(_ digest.Digest, size int64, _ bool) {
		pr.Advance(1, size)
	})
	if err != nil {
		return res, fmt.Errorf("copy blobs: %w", err)
	}
	return res, nil
}
