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
