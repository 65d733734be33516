# Convenience targets; scripts/test.sh is the source of truth for testing.
.PHONY: test build run bench tools

test:
	bash scripts/test.sh

tools:
	bash scripts/test.sh --tools-only

build:
	go build -o bin/arca ./cmd/arca

run:
	go run ./cmd/arca serve

bench:
	@if [ -f scripts/bench.sh ]; then bash scripts/bench.sh; else echo "scripts/bench.sh not written yet" >&2; exit 1; fi

.PHONY: bench-pullthrough
bench-pullthrough:
	bash scripts/bench-pullthrough.sh

# Interleaved cold-pull rounds (internal/e2e/coldrounds_bench_test.go):
# medians and min-max of same-round ratios. ROUNDS=7; ARCA_BENCH_TARGETS,
# ARCA_BENCH_MODES, ARCA_BENCH_WAVE and ARCA_BENCH_BASE_BIN select what runs.
.PHONY: bench-cold-rounds
bench-cold-rounds:
	ARCA_TOOLS_BIN=$(CURDIR)/.tools/bin PATH="$(CURDIR)/.tools/bin:$$PATH" go test -count=1 -run '^$$' -bench 'ColdRounds' -benchtime $${ROUNDS:-7}x -timeout 60m -v ./internal/e2e | grep -v '^time='
