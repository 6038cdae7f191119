# Debian's Prometheus (the package is a static Go binary) for the Compose tests.
FROM tally-base:bookworm
COPY prometheus promtool /usr/local/bin/
RUN mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
EXPOSE 9090
ENTRYPOINT ["prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
