package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/buildinfo"
)

// newVersionCmd is `arca version`; `arca --version` prints the same line.
func newVersionCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print arca's module version, commit and commit date",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintln(env.Stdout, buildinfo.Read())
			return err
		},
	}
}
