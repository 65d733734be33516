package cache

import "github.com/opencontainers/go-digest"

// LeaseKeyOf is the fetch lease key of blob d from host/path with
// credentials cred (tests plant leases of "other replicas").
func LeaseKeyOf(host, path, cred string, d digest.Digest) string {
	return leaseKey(fetchKey{host: host, path: path, cred: cred, d: d})
}

// ManifestLeaseKeyOf is the fetch lease key of manifest ref of reg/repo.
func ManifestLeaseKeyOf(reg, repo, ref string) string { return manifestLeaseKey(reg, repo, ref) }
