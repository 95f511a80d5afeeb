# Build the images from source in Docker, for an operator WITH internet access (the
# project's own machines have no registry: there, use deploy/build-images.sh).
# Needs BuildKit (for the Dockerfile-specific .dockerignore next to this file).
#
#   docker build -f deploy/multistage.Dockerfile --target sidecar     -t atocore-sidecar:local .
#   docker build -f deploy/multistage.Dockerfile --target restore-job -t atocore-restore-job:local .
#   docker build -f deploy/multistage.Dockerfile --target standin     -t atocore-standin:local .
#
# The final stages repeat deploy/<image>.Dockerfile (user, health check, entrypoint);
# keep them in step. Run from the repository root (the build context).

ARG RUST_IMAGE=rust:1-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
ARG REVISION=unknown
# +crt-static with an explicit --target: static glibc binaries, while build scripts and
# proc macros stay dynamic. The cache mounts keep the registry and target between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --locked --target "$target" \
      -p atocore-sidecar --bin atocore-sidecar \
      -p atocore-restore-job --bin atocore-restore-job \
      -p atocore-standin --bin atocore-standin \
 && mkdir -p /out \
 && cp "target/$target/release/atocore-sidecar" "target/$target/release/atocore-restore-job" \
       "target/$target/release/atocore-standin" /out/

FROM scratch AS sidecar
ARG REVISION=unknown
LABEL org.opencontainers.image.title="atocore-sidecar" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      io.atocore.component="sidecar"
COPY --from=build /out/atocore-sidecar /atocore-sidecar
USER 0:0
EXPOSE 8101
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/atocore-sidecar", "healthcheck"]
ENTRYPOINT ["/atocore-sidecar"]

FROM scratch AS restore-job
ARG REVISION=unknown
LABEL org.opencontainers.image.title="atocore-restore-job" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      io.atocore.component="restore-job"
COPY --from=build /out/atocore-restore-job /atocore-restore-job
USER 0:0
ENTRYPOINT ["/atocore-restore-job"]
CMD ["init"]

FROM scratch AS standin
ARG REVISION=unknown
LABEL org.opencontainers.image.title="atocore-standin" \
      org.opencontainers.image.description="A stand-in for the AtoCore service (not the real one), for tests and the demo" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      io.atocore.component="standin"
COPY --from=build /out/atocore-standin /atocore-standin
ENV ATOCORE_BUILD_SHA="standin-${REVISION}"
USER 10001:10001
EXPOSE 8100
HEALTHCHECK --interval=2s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/atocore-standin", "healthcheck"]
ENTRYPOINT ["/atocore-standin"]
CMD ["serve"]
