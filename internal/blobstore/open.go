package blobstore

import "context"

// Open opens the backend spec names: "" for the filesystem in fsDir, or an
// s3:// URL (see ParseS3URL).
func Open(ctx context.Context, spec, fsDir string) (Backend, error) {
	if spec == "" {
		return NewFS(fsDir)
	}
	cfg, err := ParseS3URL(spec)
	if err != nil {
		return nil, err
	}
	return NewS3(ctx, cfg)
}
