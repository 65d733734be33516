package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/arcacache/arca/internal/blobstore"
)

// location is where a backup is kept: a directory, or an S3 bucket and
// prefix holding the same names.
type location interface {
	blobs() blobstore.Backend
	// stage returns a new local path to write file name at, for put.
	stage(name string) (string, error)
	// put replaces file name with the staged file in one step: a reader
	// sees the old file or the new one, never part of it.
	put(ctx context.Context, name, staged string) error
	// fetch copies file name into a new local file dst.
	fetch(ctx context.Context, name, dst string) error
	close()
}

// openLocation opens spec, a directory (created when create is set) or
// an s3:// URL: the S3 blob backend's URL and credentials (the AWS
// environment or shared files).
func openLocation(ctx context.Context, spec string, create bool) (location, error) {
	if strings.HasPrefix(spec, "s3://") {
		cfg, err := blobstore.ParseS3URL(spec)
		if err != nil {
			return nil, err
		}
		store, err := blobstore.NewS3(ctx, cfg)
		if err != nil {
			return nil, err
		}
		tmp, err := os.MkdirTemp("", "arca-backup-")
		if err != nil {
			return nil, err
		}
		return &s3Location{store: store, tmp: tmp}, nil
	}
	if create {
		if err := os.MkdirAll(spec, 0o700); err != nil {
			return nil, err
		}
	} else if _, err := os.Stat(filepath.Join(spec, DBFile)); err != nil {
		return nil, fmt.Errorf("no backup in %s: %w", spec, err)
	}
	store, err := blobstore.NewFS(filepath.Join(spec, BlobsDir))
	if err != nil {
		return nil, err
	}
	return &dirLocation{dir: spec, store: store}, nil
}

type dirLocation struct {
	dir   string
	store *blobstore.FS
}

func (l *dirLocation) blobs() blobstore.Backend { return l.store }

func (l *dirLocation) stage(name string) (string, error) {
	p := filepath.Join(l.dir, name+".partial")
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	return p, nil
}

func (l *dirLocation) put(_ context.Context, name, staged string) error {
	return os.Rename(staged, filepath.Join(l.dir, name))
}

func (l *dirLocation) fetch(_ context.Context, name, dst string) error {
	return copyFile(filepath.Join(l.dir, name), dst)
}

func (l *dirLocation) close() {}

// s3Location keeps the blobs in the S3 backend's layout under PREFIX
// (blobs/<alg>/<hex>) and the files beside them; files are staged in a
// local temporary directory.
type s3Location struct {
	store *blobstore.S3
	tmp   string
}

func (l *s3Location) blobs() blobstore.Backend { return l.store }

func (l *s3Location) stage(name string) (string, error) {
	return filepath.Join(l.tmp, name), nil
}

func (l *s3Location) put(ctx context.Context, name, staged string) error {
	if err := l.store.PutFile(ctx, name, staged); err != nil {
		return err
	}
	return os.Remove(staged)
}

func (l *s3Location) fetch(ctx context.Context, name, dst string) error {
	return l.store.GetFile(ctx, name, dst)
}

func (l *s3Location) close() { os.RemoveAll(l.tmp) }
