package cli

import (
	"errors"
	"strings"
)

// ExitError carries a specific exit status.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode is the process exit status for err (1 unless it says otherwise).
func ExitCode(err error) int {
	var e *ExitError
	if errors.As(err, &e) && e.Code != 0 {
		return e.Code
	}
	return 1
}

// OneLine renders err on a single line for stderr.
func OneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
