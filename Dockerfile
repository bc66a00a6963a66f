# logpipe: syslog in, container metadata joined, shipped to VictoriaLogs / ClickHouse.
#   docker build -t logpipe .
#   docker run --read-only --cap-drop ALL --cap-add NET_BIND_SERVICE \
#     -p 514:514/udp -p 514:514 -p 5140:5140/udp -v logpipe-data:/var/lib/logpipe \
#     -v $PWD/config/victorialogs.toml:/etc/logpipe/logpipe.toml:ro logpipe
# Runs as uid 10514, never root. Binding 514 needs CAP_NET_BIND_SERVICE: the python binary
# carries it as a file capability (setcap below), which works as long as the container's
# bounding set keeps NET_BIND_SERVICE (Docker's default does; with --cap-drop ALL add it
# back as above). Without file capabilities (some storage drivers strip xattrs) use
# --sysctl net.ipv4.ip_unprivileged_port_start=514 instead.
# Read-only root filesystem: every write goes to daemon.data_dir (/var/lib/logpipe, a
# volume): disk buffers, metadata snapshot, dead letters, file sink. No .pyc is written.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY logpipe ./logpipe
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /install /usr/local
COPY config/victorialogs.toml /etc/logpipe/logpipe.toml
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap cap_net_bind_service=+ep "$(readlink -f /usr/local/bin/python3)" \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10514 --home-dir /var/lib/logpipe --shell /usr/sbin/nologin logpipe \
    && mkdir -p /var/lib/logpipe && chown logpipe /var/lib/logpipe && chmod 0750 /var/lib/logpipe
USER 10514
VOLUME ["/var/lib/logpipe"]
EXPOSE 514/udp 514/tcp 5140/udp 8686/tcp
ENTRYPOINT ["logpipe"]
CMD ["run", "-c", "/etc/logpipe/logpipe.toml"]
