// Package seedtest holds the CLI's end-to-end tests: they build the real
// arca binary, start `arca serve` on loopback with an admin token, and
// run every `az acr cache` / `az acr credential-set` command of the
// seeds (../shared/seeds) with `az acr` replaced by `arca`, checking
// exit status and output. A second test plants secret values and checks
// that none reaches CLI output, server logs or the data directory.
package seedtest
