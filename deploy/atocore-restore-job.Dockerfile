# atocore-restore-job: the snapshot engine CLI; in compose the init job that finishes a
# requested restore before atocore starts. Built by deploy/build-images.sh from a
# statically linked binary.
FROM scratch

ARG REVISION=unknown
ARG VERSION=0.0.0
LABEL org.opencontainers.image.title="atocore-restore-job" \
      org.opencontainers.image.description="AtoCore snapshot engine and one-shot restore/init job" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT" \
      io.atocore.component="restore-job"

COPY atocore-restore-job /atocore-restore-job

# Root on purpose: a restore puts back each file's recorded owner and mode, which only
# root may do, and it must read whatever user the service writes as. It gets no Docker
# socket and no network service; it is one-shot, so there is no HEALTHCHECK.
USER 0:0

ENTRYPOINT ["/atocore-restore-job"]
CMD ["init"]
