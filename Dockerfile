# logpipe: syslog in, container metadata joined, shipped to VictoriaLogs / ClickHouse.
#   docker build -t logpipe .
#   docker run -p 514:514/udp -p 514:514 -p 5140:5140/udp -v logpipe-data:/var/lib/logpipe \
#     -v $PWD/config/victorialogs.toml:/etc/logpipe/logpipe.toml:ro logpipe
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY logpipe ./logpipe
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
COPY config/victorialogs.toml /etc/logpipe/logpipe.toml
RUN useradd --system --uid 10514 --home-dir /var/lib/logpipe logpipe \
    && mkdir -p /var/lib/logpipe && chown logpipe /var/lib/logpipe
USER logpipe
VOLUME ["/var/lib/logpipe"]
EXPOSE 514/udp 514/tcp 5140/udp 8686/tcp
ENTRYPOINT ["logpipe"]
CMD ["run", "-c", "/etc/logpipe/logpipe.toml"]
