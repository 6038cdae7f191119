# The test image: the same layout as deploy/Dockerfile (user, paths, ports, volume, health
# check, entrypoint), on the base made here by scripts/container-images, with the release
# binary built on this machine (the same Debian release, so the same C library).
FROM tally-base:bookworm
RUN groupadd --system --gid 10001 tally \
 && useradd --system --uid 10001 --gid tally --home-dir /var/lib/tally --shell /usr/sbin/nologin tally \
 && mkdir -p /etc/tally /var/lib/tally \
 && chown tally:tally /var/lib/tally
COPY tally /usr/local/bin/tally
USER 10001:10001
VOLUME ["/var/lib/tally"]
EXPOSE 7700 8700
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["tally", "probe"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tally"]
CMD ["run", "--config", "/etc/tally/node.toml"]
