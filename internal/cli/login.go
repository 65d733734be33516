package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// savedLogin is what `arca login` keeps: one endpoint and its token.
type savedLogin struct {
	Endpoint string `json:"endpoint"`
	Token    string `json:"token,omitempty"`
}

// configDir is $ARCA_CONFIG_DIR, else $XDG_CONFIG_HOME/arca, else
// ~/.config/arca.
func configDir(env Env) (string, error) {
	if d := env.Getenv("ARCA_CONFIG_DIR"); d != "" {
		return d, nil
	}
	if d := env.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "arca"), nil
	}
	home := env.Getenv("HOME")
	if home == "" {
		return "", errors.New("cannot find a config directory: set ARCA_CONFIG_DIR, XDG_CONFIG_HOME or HOME")
	}
	return filepath.Join(home, ".config", "arca"), nil
}

func loginFile(env Env) (string, error) {
	d, err := configDir(env)
	if err != nil {
		return "", err
	}
	return filepath.Join(d, "login.json"), nil
}

// loadLogin reads the saved login; a missing file is an empty login.
func loadLogin(env Env) (savedLogin, error) {
	var l savedLogin
	p, err := loginFile(env)
	if err != nil {
		// No config directory at all: nothing was saved.
		return l, nil
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return l, fmt.Errorf("reading saved login: %w", err)
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return l, fmt.Errorf("saved login %s is not valid JSON (run `arca login` again): %w", p, err)
	}
	return l, nil
}

// saveLogin writes the login with mode 0600 (it holds a token), through
// a temporary file so a crash never leaves half a file.
func saveLogin(env Env, l savedLogin) (string, error) {
	p, err := loginFile(env)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", fmt.Errorf("creating config directory: %w", err)
	}
	b, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), ".login-*.json")
	if err != nil {
		return "", fmt.Errorf("saving login: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("saving login: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("saving login: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("saving login: %w", err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return "", fmt.Errorf("saving login: %w", err)
	}
	return p, nil
}

func newLoginCmd(env Env) *cobra.Command {
	o := newClientOpts(env)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Save the endpoint and token client commands use",
		Long: `Check that the server answers with the given token, then save the endpoint
and token for later commands, in login.json under $ARCA_CONFIG_DIR, else
$XDG_CONFIG_HOME/arca, else ~/.config/arca (mode 0600).

--endpoint/--token flags and ARCA_ENDPOINT/ARCA_TOKEN still win over what
is saved; a saved token is only sent to the endpoint it was saved with.`,
		Example: `  arca login --endpoint http://127.0.0.1:5000 --token "$ARCA_ADMIN_TOKEN"
  ARCA_TOKEN=... arca login --endpoint https://arca.example.com`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			endpoint := firstNonEmpty(o.endpoint, env.Getenv("ARCA_ENDPOINT"))
			token := firstNonEmpty(o.token, env.Getenv("ARCA_TOKEN"))
			if endpoint == "" {
				return errors.New("the following arguments are required: --endpoint")
			}
			if token == "" {
				return errors.New("the following arguments are required: --token (or set ARCA_TOKEN)")
			}
			o.endpoint, o.token = endpoint, token
			s, err := o.connect()
			if err != nil {
				return err
			}
			s.refusedHint = "the server refused this token; nothing was saved"
			ctx, cancel := o.context(cmd)
			defer cancel()
			info, err := s.serverInfo(ctx)
			if err != nil {
				return err
			}
			p, err := saveLogin(env, savedLogin{Endpoint: endpoint, Token: token})
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stderr, "Logged in to %s (default registry %q); saved to %s\n", endpoint, info.DefaultRegistry, p)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.endpoint, "endpoint", "", "arca server URL, e.g. http://127.0.0.1:5000")
	f.StringVar(&o.token, "token", "", "admin bearer token (else $ARCA_TOKEN)")
	o.output = "json"
	return cmd
}

func newLogoutCmd(env Env) *cobra.Command {
	return &cobra.Command{
		Use:     "logout",
		Short:   "Forget the saved endpoint and token",
		Example: `  arca logout`,
		Args:    cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			p, err := loginFile(env)
			if err != nil {
				return err
			}
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing saved login: %w", err)
			}
			return nil
		},
	}
}
