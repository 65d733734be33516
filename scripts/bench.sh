#!/usr/bin/env bash
# Benchmarks arca against Debian's docker-registry (distribution 2.8), distribution v3 and a
# plain file served by Go's http.ServeContent, on loopback, in one run:
#   - warm download of a 256 MiB blob by one client (MB/s);
#   - manifest GET requests/s over 64 concurrent keep-alive connections;
#   - peak RSS (VmHWM) of a fresh server while 32 clients download the blob.
# Also a plain file served through read/write copies instead of sendfile.
# Prints the medians of COUNT repetitions and the ratios; raw `go test`
# output goes to bench-results/. Results on a busy machine are noisy.
#
#   bash scripts/bench.sh            # COUNT=5 by default
#   COUNT=3 bash scripts/bench.sh
set -euo pipefail

cd "$(dirname "$0")/.."
COUNT=${COUNT:-5}
export ARCA_TOOLS_BIN=$PWD/.tools/bin
export PATH="$ARCA_TOOLS_BIN:$PATH"
command -v docker-registry >/dev/null || bash scripts/test.sh --tools-only
# distribution v3 (binary "registry"), hosted, for the manifest GET ratio.
if [[ ! -x $ARCA_TOOLS_BIN/registry ]]; then
	GOBIN=$ARCA_TOOLS_BIN go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2
fi

mkdir -p bench-results
out=bench-results/bench-$(date +%Y%m%d-%H%M%S).txt
run() { # run REGEX BENCHTIME
	go test -count=1 -run '^$' -bench "$1" -benchtime "$2" -count "$COUNT" ./internal/e2e/ | tee -a "$out"
}
{
	echo "# $(date -u +%FT%TZ) $(go version) $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} >"$out"
run '^BenchmarkBlobDownload$' 5x
run '^BenchmarkManifestGet$' 3s
run '^BenchmarkPeakRSS32$' 1x

# Median of each benchmark's metric (MB/s, req/s, peak-RSS-MiB), then ratios.
awk '
function median(key,   n, i, j, t, a) {
	n = cnt[key]
	for (i = 1; i <= n; i++) a[i] = vals[key, i]
	for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 3; i < NF; i++) if ($(i + 1) == "MB/s" || $(i + 1) == "req/s" || $(i + 1) == "peak-RSS-MiB") {
		key = name; if (!(key in cnt)) order[++nk] = key
		vals[key, ++cnt[key]] = $i; unit[key] = $(i + 1)
	}
}
END {
	printf "\n%-40s %12s  %s\n", "benchmark (median of runs)", "value", "unit"
	for (i = 1; i <= nk; i++) { k = order[i]; printf "%-40s %12.1f  %s\n", k, m[k] = median(k), unit[k] }
	a = m["BenchmarkBlobDownload/arca"]; d = m["BenchmarkBlobDownload/distribution"]; p = m["BenchmarkBlobDownload/plainfile"]
	if (a && d) printf "\nblob download:  arca / distribution = %.2f   (goal >= 1.2)\n", a / d
	d3 = m["BenchmarkBlobDownload/distribution3"]
	if (a && d3) printf "blob download:  arca / distribution v3 = %.2f\n", a / d3
	if (a && p) printf "blob download:  arca / plain file   = %.2f   (goal >= 0.80)\n", a / p
	c = m["BenchmarkBlobDownload/plainfile-copy"]
	if (p && c) printf "plain file: sendfile / read+write copy = %.2f   (which serving path is faster here)\n", p / c
	a = m["BenchmarkManifestGet/arca"]; d = m["BenchmarkManifestGet/distribution"]
	if (a && d) printf "manifest GET:   arca / distribution = %.2f   (goal >= 1.2)\n", a / d
	d3 = m["BenchmarkManifestGet/distribution3"]
	if (a && d3) printf "manifest GET:   arca / distribution v3 = %.2f   (goal >= 1.5)\n", a / d3
	a = m["BenchmarkPeakRSS32/arca"]; d = m["BenchmarkPeakRSS32/distribution"]
	if (a) printf "peak RSS, 32 x 256 MiB downloads: arca %.1f MiB (goal < 100), distribution %.1f MiB\n", a, d
}' "$out" | tee -a "$out"
echo "raw results: $out"

# Pull-through caching: cold/warm pulls vs the upstream and distribution's
# proxy mode, 32 concurrent pullers (its own script, also run alone).
bash scripts/bench-pullthrough.sh
