// Package cli builds arca's command tree. Commands are built by
// constructors from an explicit environment (streams, environment lookup):
// no package-level state, so tests run commands in-process.
package cli

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/arcacache/arca/internal/buildinfo"
)

// Env is what commands read from and write to.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Getenv func(string) string
}

// OSEnv is the process environment.
func OSEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// NewRootCmd returns the `arca` command with all subcommands.
func NewRootCmd(env Env) *cobra.Command {
	root := &cobra.Command{
		Use:           "arca",
		Short:         "arca: a self-hosted artifact cache and registry mirror",
		Long:          "arca is an OCI registry whose repositories can be backed by cache rules that pull through from upstream registries.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Read().String(),
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.AddCommand(newServeCmd(env))
	root.AddCommand(newCacheCmd(env), newCredentialSetCmd(env), newLoginCmd(env), newLogoutCmd(env), newApplyCmd(env), newVersionCmd(env))
	root.AddCommand(newRegistryCmd(env), newCredentialCmd(env), newScopeMapCmd(env), newTokenCmd(env), newPrincipalCmd(env), newAuditCmd(env))
	root.AddCommand(registryCmds(env)...) // arca create|update|show|list|delete, as az acr
	root.AddCommand(newBackupCmd(env), newRestoreCmd(env))
	return root
}
