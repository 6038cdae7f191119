# Debian's Alertmanager for the Compose tests.
FROM tally-base:bookworm
COPY alertmanager /usr/local/bin/alertmanager
COPY alertmanager-share /usr/share/prometheus/alertmanager
RUN mkdir -p /alertmanager && chown 65534:65534 /alertmanager
USER 65534:65534
EXPOSE 9093
ENTRYPOINT ["alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]
