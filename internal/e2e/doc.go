// Package e2e holds end-to-end tests: they build the real arca binary,
// start it on loopback and drive it with real registry clients (crane,
// oras, skopeo, regctl) and raw HTTP. The tools are installed by
// scripts/test.sh into .tools/bin; a missing tool fails the test rather
// than skipping it.
package e2e
