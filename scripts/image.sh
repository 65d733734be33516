#!/usr/bin/env bash
# Container image without Docker: a multi-platform OCI image index
# (linux/amd64 and linux/arm64) in an OCI image layout directory, from
# the reproducible binaries of scripts/release.sh.
#
#   scripts/image.sh [VERSION [OUTDIR]]
#
# Writes OUTDIR/arca-VERSION-oci (default OUTDIR dist/), an OCI layout
# whose index.json names the image index VERSION. Push it with any OCI
# client, e.g.
#   regctl image copy ocidir://dist/arca-VERSION-oci:VERSION registry.example/arca:VERSION
#   crane push --index dist/arca-VERSION-oci registry.example/arca:VERSION
# Same commit, Go version and CA bundle give the same index digest.
# ARCHES (default "amd64 arm64") selects the platforms.
set -euo pipefail

cd "$(dirname "$0")/.."
VERSION=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
OUT=${2:-dist}
export ARCHES=${ARCHES:-amd64 arm64}
bash scripts/release.sh "$VERSION" "$OUT"

COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
# The commit date stamps every file and the config, as release.sh stamps
# the binary; without git, the Unix epoch.
CREATED=$(TZ=UTC git show -s --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd HEAD 2>/dev/null || echo 1970-01-01T00:00:00Z)
LAYOUT=$OUT/arca-$VERSION-oci
rm -rf "$LAYOUT"
bins=()
for arch in $ARCHES; do
	bins+=(-bin "linux/$arch=$OUT/arca-$VERSION-linux-$arch")
done
go run ./internal/tools/mkimage -out "$LAYOUT" -version "$VERSION" -revision "$COMMIT" -created "$CREATED" "${bins[@]}"
