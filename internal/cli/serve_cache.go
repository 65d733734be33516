package cli

import (
	"time"

	"github.com/spf13/pflag"

	"github.com/arcacache/arca/internal/server"
)

// addPullThroughFlags adds `arca serve`'s settings for rule-backed
// repositories and their upstreams.
func addPullThroughFlags(f *pflag.FlagSet, o *server.PullThroughOptions) {
	f.StringArrayVar(&o.InsecureUpstreams, "insecure-upstream", nil, "upstream login server HOST:PORT to reach over plain HTTP (repeatable; everything else is HTTPS)")
	f.DurationVar(&o.Revalidate, "revalidate-after", 5*time.Minute, "a cached tag older than this is checked upstream (with a HEAD) on its next pull")
	f.DurationVar(&o.RevalidateTimeout, "revalidate-timeout", 2*time.Second, "how long a pull waits for that check before it serves the cached manifest (stale); the check goes on in the background")
	f.DurationVar(&o.NegativeTTL, "negative-cache-ttl", 30*time.Second, "how long an upstream 404 for a digest is remembered per source repository (tags: at most --revalidate-after; 0: off)")
	f.DurationVar(&o.FetchTimeout, "fetch-timeout", time.Hour, "longest an upstream blob transfer may take (it goes on when the client leaves)")
	f.DurationVar(&o.UpstreamConnectTimeout, "upstream-connect-timeout", 5*time.Second, "how long a TCP connect and TLS handshake to an upstream may take")
	f.DurationVar(&o.UpstreamHeaderTimeout, "upstream-header-timeout", 15*time.Second, "how long to wait for an upstream's response headers (per attempt)")
	f.DurationVar(&o.UpstreamIdleTimeout, "upstream-idle-timeout", 30*time.Second, "how long an upstream response body may pause before the transfer fails")
	f.StringArrayVar(&o.UpstreamAllow, "upstream-allow", nil, "only connect to these hosts (HOST, HOST:PORT or CIDR; repeatable): upstreams, their token and blob hosts, secret stores; others are refused before any DNS lookup. Empty: public addresses, and loopback/private/link-local ones only for hosts a cache rule or credential set names")
	f.StringArrayVar(&o.UpstreamCA, "upstream-ca", nil, "PEM file of a CA to trust for upstreams, besides the system's (repeatable; a private registry's CA)")
	f.StringVar(&o.MirrorNamespace, "mirror-namespace", "docker.io", `upstream assumed for requests that match no rule and no repository (Docker's registry-mirrors); "" turns it off`)
}

// addSyncFlags adds `arca serve`'s active sync settings.
func addSyncFlags(f *pflag.FlagSet, o *server.SyncOptions) {
	f.DurationVar(&o.Interval, "sync-interval", 12*time.Hour, "time between active sync runs of a rule (a new or changed rule runs at once)")
	f.IntVar(&o.Concurrency, "sync-concurrency", 4, "concurrent upstream requests per upstream host during active sync")
	f.DurationVar(&o.Poll, "sync-poll", 30*time.Second, "how often a replica looks for due active sync rules (rules changed on another replica, or left by a dead one once their lease lapsed)")
	f.IntVar(&o.MinRateLimitRemaining, "sync-min-ratelimit-remaining", 10, "defer active sync while an upstream's ratelimit-remaining is below this (negative: never)")
}

// addLifecycleFlags adds `arca serve`'s access tracking and eviction settings.
func addLifecycleFlags(f *pflag.FlagSet, o *server.LifecycleOptions) {
	f.DurationVar(&o.EvictionInterval, "eviction-interval", server.DefaultEvictionInterval, "time between eviction passes over cached content (rules' --retention-days, then the registry's --cache-quota); one replica at a time")
	f.DurationVar(&o.PullFlushInterval, "pull-flush-interval", server.DefaultPullFlushInterval, "how often batched last-pulled times are written to the metadata store (a crash loses at most this much)")
}

// addClusterFlags adds `arca serve`'s settings for running as one of
// several replicas on one PostgreSQL database and one S3 bucket.
func addClusterFlags(f *pflag.FlagSet, o *server.ClusterOptions) {
	f.StringVar(&o.Advertise, "cluster-advertise", "", "base URL (http://HOST:PORT) at which the other replicas reach this one, to follow its upstream blob fetches (with --metadata postgres://...); empty: they wait until the blob is stored")
	f.DurationVar(&o.FetchLeaseTTL, "fetch-lease-ttl", 10*time.Second, "how long a replica's lease on an upstream blob fetch lasts unless renewed (the longest a dead replica delays that blob's fetch elsewhere)")
	f.DurationVar(&o.SyncLeaseTTL, "sync-lease-ttl", 2*time.Minute, "how long a replica's lease on an active sync rule lasts unless renewed (the longest a dead replica's rule waits for another replica)")
}
