#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing,
# then checks formatting, vets, and runs every test with the race detector.
#
# Needs only Go (and apt-get for the Debian packages, run as root or with
# sudo). Go tools go to the git-ignored .tools/bin; reruns skip what is
# installed at the pinned version (.tools/stamps records what each install
# was) and reinstall what a changed pin names.
# `bash scripts/test.sh --tools-only` installs the tools and stops.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS_BIN=$ROOT/.tools/bin
STAMPS=$ROOT/.tools/stamps
mkdir -p "$TOOLS_BIN" "$STAMPS"
export PATH="$TOOLS_BIN:$PATH"
export ARCA_TOOLS_BIN="$TOOLS_BIN"
export DEBIAN_FRONTEND=noninteractive
# Tests whose real parts are missing fail instead of skipping.
export ARCA_REQUIRE_TOOLS=1

# Debian packages the tests drive. Add one word here to add a package.
APT_PACKAGES=(skopeo docker-registry containerd podman prometheus systemd postgresql chromium)

# Go tools: name -> module@version installed with `go install`.
declare -A GO_TOOLS=(
	[crane]=github.com/google/go-containerregistry/cmd/crane@v0.22.1
	[regctl]=github.com/regclient/regclient/cmd/regctl@v0.11.7
	[staticcheck]=honnef.co/go/tools/cmd/staticcheck@v0.8.2
	# distribution v3: the proxy-mode peer in benchmarks, and a paginating upstream in tests.
	[registry]=github.com/distribution/distribution/v3/cmd/registry@v3.1.2
	# MinIO: the S3 server of the S3 blob backend's tests. Long to build once
	# (about 5 minutes on 2 cores, mostly downloads); cached afterwards.
	[minio]=github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c
	# helm: lints and renders deploy/helm/arca in the chart tests.
	[helm]=helm.sh/helm/v3/cmd/helm@v3.22.0
)
ORAS_VERSION=v1.3.3

step() { printf '\n==> %s\n' "$*"; }
die() {
	printf 'test.sh: %s\n' "$*" >&2
	exit 1
}

install_apt() {
	local missing=() pkg
	for pkg in "${APT_PACKAGES[@]}"; do
		[[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || missing+=("$pkg")
	done
	if ((${#missing[@]} == 0)); then
		echo "apt packages present: ${APT_PACKAGES[*]}"
		return
	fi
	local sudo=()
	if [[ $(id -u) != 0 ]]; then
		command -v sudo >/dev/null || die "need root or sudo to apt-get install ${missing[*]}"
		sudo=(sudo -n)
	fi
	echo "apt-get install ${missing[*]}"
	"${sudo[@]}" apt-get update -qq </dev/null || die "apt-get update failed"
	"${sudo[@]}" apt-get install -y -qq "${missing[@]}" </dev/null ||
		die "apt-get install ${missing[*]} failed"
}

# current NAME PIN: whether tool NAME is installed as PIN, by its stamp.
# A binary without a stamp (installed before stamps were kept) counts as
# PIN when its build info says so (`go version -m`: the package path and
# the version of the module that holds it), and gets its stamp.
current() {
	local name=$1 pin=$2 bin=$TOOLS_BIN/$1 stamp=$STAMPS/$1
	[[ -x $bin ]] || return 1
	if [[ ! -e $stamp ]]; then
		local built
		built=$(go version -m "$bin" 2>/dev/null | awk '
			$1 == "path" { path = $2 }
			($1 == "mod" || $1 == "dep") && index(path "/", $2 "/") == 1 { version = $3 }
			END { if (path != "" && version != "") print path "@" version }')
		[[ $built == "$pin" ]] || return 1
		echo "$pin" >"$stamp"
	fi
	[[ $(<"$stamp") == "$pin" ]]
}

# stamp NAME PIN records that NAME was installed as PIN.
stamp() { echo "$2" >"$STAMPS/$1"; }

install_go_tools() {
	local name
	for name in "${!GO_TOOLS[@]}"; do
		if current "$name" "${GO_TOOLS[$name]}"; then
			echo "$name present (${GO_TOOLS[$name]})"
			continue
		fi
		echo "go install ${GO_TOOLS[$name]}"
		GOBIN=$TOOLS_BIN go install "${GO_TOOLS[$name]}" || die "go install ${GO_TOOLS[$name]} failed"
		stamp "$name" "${GO_TOOLS[$name]}"
	done
	local oras=oras.land/oras/cmd/oras@$ORAS_VERSION
	if current oras "$oras"; then
		echo "oras present ($oras)"
		return
	fi
	# The module proxy refuses `go install oras...@version` (replace
	# directives), so build it inside a throwaway module.
	echo "building $oras in a scratch module"
	local tmp
	tmp=$(mktemp -d)
	(
		cd "$tmp" &&
			go mod init x >/dev/null 2>&1 &&
			go get "oras.land/oras/cmd/oras@$ORAS_VERSION" &&
			go build -o "$TOOLS_BIN/oras" oras.land/oras/cmd/oras
	) || {
		rm -rf "$tmp"
		die "building oras failed"
	}
	rm -rf "$tmp"
	stamp oras "$oras"
}

# npm packages the tests use, each a directory with package.json and its
# lockfile, installed with `npm ci` (node_modules is git-ignored).
NPM_DIRS=(tools/axe tools/jssdk)

install_npm() {
	local dir name lock
	for dir in "${NPM_DIRS[@]}"; do
		# The stamp is the lockfile's hash when npm ci last succeeded: a
		# changed lockfile reinstalls, whatever its modification time.
		name=npm-${dir//\//-}
		lock=$(sha256sum "$ROOT/$dir/package-lock.json" | cut -d' ' -f1)
		if [[ -d $ROOT/$dir/node_modules && -e $STAMPS/$name && $(<"$STAMPS/$name") == "$lock" ]]; then
			echo "$dir: npm packages present"
			continue
		fi
		command -v npm >/dev/null || die "npm is needed for $dir (Debian: apt-get install npm)"
		echo "npm ci in $dir"
		(cd "$ROOT/$dir" && npm ci --no-audit --no-fund) || die "npm ci in $dir failed"
		stamp "$name" "$lock"
	done
}

declare -a RESULTS=()
FAILED=0
record() { # record NAME STATUS
	RESULTS+=("$(printf '%-8s %s' "$2" "$1")")
	[[ $2 == PASS ]] || FAILED=1
}

START=$(date +%s)
step "tools"
install_apt
install_go_tools
install_npm
if [[ ${1:-} == --tools-only ]]; then
	exit 0
fi

step "gofmt"
unformatted=$(gofmt -l .)
if [[ -n $unformatted ]]; then
	echo "not gofmt-ed:"
	echo "$unformatted"
	record "gofmt -l" FAIL
else
	record "gofmt -l" PASS
fi

step "go vet ./..."
if go vet ./...; then record "go vet ./..." PASS; else record "go vet ./..." FAIL; fi

step "staticcheck ./..."
if staticcheck ./...; then record "staticcheck ./..." PASS; else record "staticcheck ./..." FAIL; fi

step "go test -race -count=1 ./..."
TEST_LOG=$(mktemp)
trap 'rm -f "$TEST_LOG"' EXIT
if go test -race -count=1 -timeout 45m ./... 2>&1 | tee "$TEST_LOG"; then
	record "go test -race ./..." PASS
else
	record "go test -race ./..." FAIL
fi

# Second pass: the end-to-end tests (real clients, crash, pull-through,
# sync) once more on the external backends: metadata in PostgreSQL (a
# private cluster), blobs in S3 (a loopback MinIO).
step "go test -race ./internal/e2e/... with ARCA_TEST_METADATA=postgres ARCA_TEST_BLOBS=s3"
if ARCA_TEST_METADATA=postgres ARCA_TEST_BLOBS=s3 go test -race -count=1 -timeout 45m ./internal/e2e/... 2>&1 | tee -a "$TEST_LOG"; then
	record "e2e, PostgreSQL metadata + S3 blobs" PASS
else
	record "e2e, PostgreSQL metadata + S3 blobs" FAIL
fi
pkg_ok=$(grep -cE '^ok[[:space:]]' "$TEST_LOG" || true)
pkg_fail=$(grep -cE '^FAIL[[:space:]]' "$TEST_LOG" || true)

step "summary ($(($(date +%s) - START))s)"
printf '%s\n' "${RESULTS[@]}"
echo "packages: $pkg_ok ok, $pkg_fail failed"
if ((FAILED)); then
	grep -E '^[[:space:]]*--- FAIL|^FAIL[[:space:]]' "$TEST_LOG" || true
	echo "RESULT: FAIL"
	exit 1
fi
echo "RESULT: PASS"
