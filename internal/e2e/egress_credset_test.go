package e2e

import (
	"testing"

	"github.com/arcacache/arca/internal/testutil/arcaproc"
	"github.com/arcacache/arca/internal/testutil/upstreamreg"
)

// A credential set for a loopback registry, created on an arca with its
// default egress policy (non-public hosts only when a rule or set names
// them): the set names its login server, so the check that runs before
// the set is saved may reach it. It used to be refused ("no cache rule or
// credential set names this host") and the set saved as Unhealthy.
func TestCredentialSetCheckReachesItsNamedLoopbackHost(t *testing.T) {
	up := upstreamreg.Start(t, upstreamreg.Options{Auth: upstreamreg.Htpasswd, Username: "puller", Password: "egress-named-pw-31c7"})
	const userEnv, passEnv = "ARCA_E2E_EGRESS_USER", "ARCA_E2E_EGRESS_PASS"
	a := &arca{arcaproc.Start(t, arcaproc.Options{Bin: arcaBin, DefaultEgress: true,
		Args: []string{"--insecure-upstream", up.Host},
		Env:  []string{"ARCA_ADMIN_TOKEN=" + ptAdminToken, userEnv + "=" + up.Username, passEnv + "=" + up.Password}})}
	health := func(out string) (status, msg string) {
		t.Helper()
		status, msg, _ = credentialSetHealth(t, out)
		return status, msg
	}
	out := a.cli(t, "credential-set", "create", "-r", "default", "-n", "loopback", "-l", up.Host,
		"-u", "env://"+userEnv, "-p", "env://"+passEnv)
	if st, msg := health(out); st != "Healthy" {
		t.Errorf("create: credential health %s (%s), want Healthy", st, msg)
	}
	out = a.cli(t, "credential-set", "show", "-r", "default", "-n", "loopback")
	if st, msg := health(out); st != "Healthy" {
		t.Errorf("show: credential health %s (%s), want Healthy", st, msg)
	}
}
