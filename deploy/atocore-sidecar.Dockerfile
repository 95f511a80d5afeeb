# atocore-sidecar: admin API, backup schedule, retention, metrics, orchestrated restore
# and drill. Built by deploy/build-images.sh from a statically linked binary.
FROM scratch

ARG REVISION=unknown
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="atocore-sidecar" \
      org.opencontainers.image.description="AtoCore sidecar: admin API, backup schedule, retention, metrics, orchestrated restore and drill" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      io.atocore.component="sidecar"

COPY atocore-sidecar /atocore-sidecar

# Root on purpose: it talks to the Docker socket (root-equivalent whatever the uid, so a
# non-root uid with the socket's group would buy nothing), and it must read the live
# database and chroma files of whatever user the service writes as. To run it as
# another uid anyway: compose `user: "UID:GID"` plus `group_add: ["<docker socket gid>"]`,
# and that uid needs read access to the data and write access to the backups.
USER 0:0
EXPOSE 8101

# Listens where ATOCORE_SIDECAR_ADDR says (compose sets 0.0.0.0:8101); the binary probes
# its own /health.
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/atocore-sidecar", "healthcheck"]

ENTRYPOINT ["/atocore-sidecar"]
