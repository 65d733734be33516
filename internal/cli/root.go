// Package cli builds arca's command tree. Commands are built by
// constructors from an explicit environment (streams, environment lookup):
// no package-level state, so tests run commands in-process.
package cli

import (
	"fmt"
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
	// globals are az's global arguments, set on the root command and
	// read by every command (nil outside NewRootCmd: all off).
	globals *globalOpts
}

// globalOpts are az's global arguments, which every command accepts.
type globalOpts struct {
	subscription   string // used in the resource ids the CLI builds
	onlyShowErrors bool   // no warnings on stderr
	verbose        bool   // each management call's method, URL and status on stderr
	debug          bool   // verbose plus headers (credentials redacted)
}

func (e Env) global() globalOpts {
	if e.globals == nil {
		return globalOpts{}
	}
	return *e.globals
}

// OSEnv is the process environment.
func OSEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// rootExamples are the everyday commands, as the seed documents use them
// (az acr cache / credential-set), plus arca's own.
const rootExamples = `  # Run the registry (all state in ./arca-data; the admin token is printed at first start)
  arca serve --addr 0.0.0.0:5000 --data-dir /var/lib/arca
  arca login --endpoint http://127.0.0.1:5000 --token "$ARCA_ADMIN_TOKEN"

  # A credential set whose secrets live in Key Vault, and a cache rule that uses it
  arca credential-set create -r MyRegistry -n MyDockerHubCredSet -l docker.io -u https://MyKeyvault.vault.azure.net/secrets/usernamesecret -p https://MyKeyvault.vault.azure.net/secrets/passwordsecret
  arca cache create -r MyRegistry -n MyRule -s docker.io/library/ubuntu -t ubuntu -c MyDockerHubCredSet
  arca cache show -r MyRegistry -n MyRule
  arca cache update -r MyRegistry -n MyRule --remove-cred-set
  arca cache list -r MyRegistry
  arca cache delete -r MyRegistry -n MyRule

  # Operate it
  arca doctor
  arca backup --to /backup/arca
  arca completion bash > /etc/bash_completion.d/arca`

// NewRootCmd returns the `arca` command with all subcommands.
func NewRootCmd(env Env) *cobra.Command {
	env.globals = &globalOpts{}
	root := &cobra.Command{
		Use:           "arca",
		Short:         "arca: a self-hosted artifact cache and registry mirror",
		Long:          "arca is an OCI registry whose repositories can be backed by cache rules that pull through from upstream registries.",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Read().String(),
		Example:       rootExamples,
	}
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetIn(env.Stdin)
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	g := root.PersistentFlags()
	g.StringVar(&env.globals.subscription, "subscription", "", "subscription id used in the resource ids the CLI builds (default: the server's; another is answered SubscriptionNotFound)")
	g.BoolVar(&env.globals.onlyShowErrors, "only-show-errors", false, "only show errors, suppressing warnings")
	g.BoolVar(&env.globals.verbose, "verbose", false, "show each management call's method, URL, status and time on stderr")
	g.BoolVar(&env.globals.debug, "debug", false, "as --verbose, with the request and answer headers (credentials redacted)")
	root.AddCommand(newServeCmd(env))
	root.AddCommand(newCacheCmd(env), newCredentialSetCmd(env), newLoginCmd(env), newLogoutCmd(env), newApplyCmd(env), newVersionCmd(env))
	root.AddCommand(newRegistryCmd(env), newCredentialCmd(env), newScopeMapCmd(env), newTokenCmd(env), newPrincipalCmd(env), newAuditCmd(env))
	root.AddCommand(newIdentityCmd(env), newRoleCmd(env))
	root.AddCommand(registryCmds(env)...) // arca create|update|show|list|delete, as az acr
	root.AddCommand(newBackupCmd(env), newRestoreCmd(env), newDoctorCmd(env), newMigrateCmd(env), newCopyStoreCmd(env))
	root.AddCommand(newGCCmd(env), newConfigCmd(env), newRepositoryCmd(env))
	for _, c := range root.Commands() {
		strictGroups(c)
	}
	return root
}

// strictGroups makes c and the command groups below it refuse an unknown
// subcommand: cobra prints a group's help and exits 0 for `arca cache lst`,
// and with flags (`arca cache lst -r R`) complains about the flag instead.
// Alone, a group prints its help, as az does.
func strictGroups(c *cobra.Command) {
	if !c.HasSubCommands() || c.Runnable() {
		return
	}
	c.Args = cobra.ArbitraryArgs
	c.SuggestionsMinimumDistance = 2 // cobra's default, which SuggestionsFor does not apply
	c.FParseErrWhitelist.UnknownFlags = true
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += fmt.Sprintf("; did you mean %q?", s[0])
		}
		return fmt.Errorf("%s (see %s --help)", msg, cmd.CommandPath())
	}
	for _, sub := range c.Commands() {
		strictGroups(sub)
	}
}
