// Command arca is the artifact cache: registry server and management CLI.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/arcacache/arca/internal/cli"
)

func main() {
	root := cli.NewRootCmd(cli.OSEnv())
	if err := root.ExecuteContext(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "arca: "+cli.OneLine(err))
		os.Exit(cli.ExitCode(err))
	}
}
