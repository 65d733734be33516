# arca image. Build: docker build -t arca .   Run:
#   docker run -p 5000:5000 -v arca-data:/var/lib/arca -e ARCA_ADMIN_TOKEN=... arca
#
# Layout (the same as scripts/image.sh builds without Docker, see docs/deploy.md):
#   /usr/local/bin/arca   static binary (CGO_ENABLED=0, -trimpath)
#   /var/lib/arca         data directory (--data-dir): a volume
#   user 65532:65532      no root; no shell, no package manager
#   port 5000             registry, management API, /metrics, /healthz, /readyz
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -buildid= -X github.com/arcacache/arca/internal/buildinfo.version=${VERSION}" \
      -o /out/arca ./cmd/arca \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/arca /usr/local/bin/arca
COPY --from=build --chown=65532:65532 /out/data /var/lib/arca
USER 65532:65532
VOLUME /var/lib/arca
EXPOSE 5000
ENTRYPOINT ["/usr/local/bin/arca", "serve", "--addr", "0.0.0.0:5000", "--data-dir", "/var/lib/arca"]
