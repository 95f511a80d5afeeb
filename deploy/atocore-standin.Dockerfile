# atocore-standin: a STAND-IN for the AtoCore service (not the real one), for the tests
# and the demo. Built by deploy/build-images.sh from a statically linked binary.
FROM scratch

ARG REVISION=unknown
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="atocore-standin" \
      org.opencontainers.image.description="A stand-in for the AtoCore service (not the real one): same endpoints, real WAL SQLite, chroma-like files; for tests and the demo" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      io.atocore.component="standin"

COPY atocore-standin /atocore-standin

# Reported by GET /health as build_sha; set ATOCORE_BUILD_SHA at run time to override.
ENV ATOCORE_BUILD_SHA="standin-${REVISION}"

# Non-root. Its database and chroma folders must be writable for 10001:10001
# (`atocore-standin prepare-storage --owner 10001:10001`, run as root, does that; the
# demo compose file runs it first).
USER 10001:10001
EXPOSE 8100

# A scratch image has no curl: the binary probes its own /health.
HEALTHCHECK --interval=2s --timeout=3s --start-period=30s --retries=3 \
  CMD ["/atocore-standin", "healthcheck"]

ENTRYPOINT ["/atocore-standin"]
CMD ["serve"]
