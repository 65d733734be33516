#!/usr/bin/env bash
# Pull-through benchmarks (internal/e2e/pullthrough_bench_test.go), in one
# run against one real upstream (Debian's docker-registry) on loopback:
#   - cold pull of an image with a 256 MiB layer through arca vs directly
#     from the upstream, and through distribution 2.8 (Debian) and v3.1.2 in
#     proxy mode; with a lean Go client and with `crane pull`; with the lean
#     client also through a pass-through floor (upstream -> file + sha256 ->
#     client in one loop, no fsync);
#   - warm pulls of the same, and the layer from a plain file server
#     (Go's http.ServeContent);
#   - 32 concurrent cold pulls of a 32 MiB image vs one: wall time, upstream
#     GETs per blob, arca's peak RSS; on loopback and with the upstream
#     behind a 25 MiB/s-per-connection link (a registry across the internet).
# Each figure is the mean of OPS operations (default 3). Loopback on a busy
# shared machine is noisy: compare ratios from the same run, not absolutes.
#
#   bash scripts/bench-pullthrough.sh
#   OPS=5 bash scripts/bench-pullthrough.sh
set -euo pipefail

cd "$(dirname "$0")/.."
OPS=${OPS:-3}
export ARCA_TOOLS_BIN=$PWD/.tools/bin
export PATH="$ARCA_TOOLS_BIN:$PATH"
{ command -v docker-registry && command -v crane; } >/dev/null || bash scripts/test.sh --tools-only
# distribution v3 (binary "registry"): only the benchmarks need it.
if [[ ! -x $ARCA_TOOLS_BIN/registry ]]; then
	echo "go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2"
	GOBIN=$ARCA_TOOLS_BIN go install github.com/distribution/distribution/v3/cmd/registry@v3.1.2
fi

mkdir -p bench-results
out=bench-results/pullthrough-$(date +%Y%m%d-%H%M%S).txt
{
	echo "# $(date -u +%FT%TZ) $(go version) $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); OPS=$OPS"
} >"$out"
go test -count=1 -run '^$' -bench '^BenchmarkPullThrough$' -benchtime "${OPS}x" -timeout 30m ./internal/e2e/ 2>&1 |
	grep -v '^time=' | tee -a "$out"

awk '
/^BenchmarkPullThrough\// {
	name = $1; sub(/^BenchmarkPullThrough\//, "", name); sub(/-[0-9]+$/, "", name)
	order[++n] = name
	for (i = 3; i < NF; i++) v[name, $(i + 1)] = $i
}
function r(a, b) { return (a > 0 && b > 0) ? sprintf("%.2f", a / b) : "n/a" }
function line(desc, val, goal) { printf "%-54s %13s   %s\n", desc, val, goal }
END {
	printf "\n%-28s %10s %10s %14s %10s\n", "benchmark", "MB/s", "wall s", "upstream GETs", "peak RSS"
	printf "%-28s %10s %10s %14s %10s\n", "", "", "", "per blob", "MiB"
	for (i = 1; i <= n; i++) {
		k = order[i]
		printf "%-28s %10s %10s %14s %10s\n", k, \
			((k, "MB/s") in v) ? sprintf("%.1f", v[k, "MB/s"]) : "", \
			((k, "wall-s") in v) ? sprintf("%.3f", v[k, "wall-s"]) : sprintf("%.3f", v[k, "ns/op"] / 1e9), \
			((k, "upstream-GETs/blob") in v) ? sprintf("%.2f", v[k, "upstream-GETs/blob"]) : "", \
			((k, "peak-RSS-MiB") in v) ? sprintf("%.1f", v[k, "peak-RSS-MiB"]) : ""
	}
	printf "\n%-54s %13s   %s\n", "ratios (same run)", "value", "goal"
	for (m = 1; m <= 2; m++) {
		c = (m == 1) ? "Lean" : "Crane"
		line("cold " c ": time via arca / direct from upstream", r(v["Cold" c "/direct", "MB/s"], v["Cold" c "/arca", "MB/s"]), "<= 1.10")
		line("cold " c ": arca / dist2.8 throughput", r(v["Cold" c "/arca", "MB/s"], v["Cold" c "/dist2.8", "MB/s"]), "> 1")
		line("cold " c ": arca / dist3 throughput", r(v["Cold" c "/arca", "MB/s"], v["Cold" c "/dist3", "MB/s"]), "> 1")
		line("warm " c ": arca / dist2.8 throughput", r(v["Warm" c "/arca", "MB/s"], v["Warm" c "/dist2.8", "MB/s"]), "> 1")
		line("warm " c ": arca / dist3 throughput", r(v["Warm" c "/arca", "MB/s"], v["Warm" c "/dist3", "MB/s"]), "> 1")
	}
	line("cold Lean: time via arca / pass-through floor", r(v["ColdLean/floor", "MB/s"], v["ColdLean/arca", "MB/s"]), "<= 1.15")
	line("cold, 25 MiB/s upstream link: time via arca / direct", r(v["ColdWAN/direct", "MB/s"], v["ColdWAN/arca", "MB/s"]), "<= 1.10")
	line("cold, 25 MiB/s upstream link: arca / dist2.8 throughput", r(v["ColdWAN/arca", "MB/s"], v["ColdWAN/dist2.8", "MB/s"]), "> 1")
	line("cold, 25 MiB/s upstream link: arca / dist3 throughput", r(v["ColdWAN/arca", "MB/s"], v["ColdWAN/dist3", "MB/s"]), "> 1")
	line("warm Lean: arca / plain file (http.ServeContent)", r(v["WarmLean/arca", "MB/s"], v["WarmLean/plainfile", "MB/s"]), ">= 0.80")
	line("wall time 32 pulls / 1 pull, loopback upstream", r(v["Wave32/32-loopback", "wall-s"], v["Wave32/one-loopback", "wall-s"]), "<= 1.3")
	line("wall time 32 pulls / 1 pull, 25 MiB/s upstream link", r(v["Wave32/32-wan", "wall-s"], v["Wave32/one-wan", "wall-s"]), "<= 1.3")
	line("upstream GETs per blob, 32 pullers (loopback, wan)", v["Wave32/32-loopback", "upstream-GETs/blob"] ", " v["Wave32/32-wan", "upstream-GETs/blob"], "1")
	line("arca peak RSS MiB, 32 pullers (loopback, wan)", v["Wave32/32-loopback", "peak-RSS-MiB"] ", " v["Wave32/32-wan", "peak-RSS-MiB"], "< 200")
}' "$out" | tee -a "$out"
echo "raw results: $out"
