package metadata_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/arcacache/arca/internal/metadata"
	"github.com/arcacache/arca/internal/metadata/metadatatest"
	"github.com/arcacache/arca/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestSQLiteConformance(t *testing.T) {
	metadatatest.Run(t, func(t *testing.T) metadata.Store {
		s, err := metadata.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "m.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

func TestPostgresConformance(t *testing.T) {
	pgtest.SkipIfMissing(t)
	metadatatest.Run(t, func(t *testing.T) metadata.Store {
		s, err := metadata.OpenPostgres(context.Background(), pgtest.NewDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
