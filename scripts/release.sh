#!/usr/bin/env bash
# Release build: static arca binaries for Linux, with checksums.
#
#   scripts/release.sh [VERSION [OUTDIR]]
#
# VERSION defaults to `git describe --tags --always --dirty`; OUTDIR to
# dist/. Writes OUTDIR/arca-VERSION-linux-ARCH for each ARCH in $ARCHES
# (default "amd64 arm64") and OUTDIR/SHA256SUMS. `arca version` of each
# prints VERSION, the commit and its date (stamped with -X, as the
# toolchain's own VCS stamp is missing in worktrees or with
# GOFLAGS=-buildvcs=false). -trimpath, no build ID and a fixed toolchain
# make the build reproducible: the same commit and Go version give the
# same bytes.
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
OUT=${2:-dist}
ARCHES=${ARCHES:-amd64 arm64}
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
DATE=$(TZ=UTC git show -s --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd HEAD 2>/dev/null || echo unknown)
if [[ $COMMIT != unknown && -n $(git status --porcelain 2>/dev/null) ]]; then
	COMMIT+=+dirty
fi
[[ $VERSION =~ ^[A-Za-z0-9._+-]+$ ]] || { echo "release.sh: bad version '$VERSION'" >&2; exit 1; }

PKG=github.com/arcacache/arca/internal/buildinfo
mkdir -p "$OUT"
files=()
for arch in $ARCHES; do
	name=arca-$VERSION-linux-$arch
	echo "building $OUT/$name"
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -buildvcs=false \
		-ldflags "-s -w -buildid= -X $PKG.version=$VERSION -X $PKG.commit=$COMMIT -X $PKG.date=$DATE" \
		-o "$OUT/$name" ./cmd/arca
	files+=("$name")
done
(cd "$OUT" && sha256sum "${files[@]}" >SHA256SUMS)
echo "wrote $OUT/SHA256SUMS"
