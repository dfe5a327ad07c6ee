# gateway: slim image, non-root, health-checked. Configure with GATEWAY_* variables or a mounted TOML.
# Required at run time: GATEWAY_ENCRYPTION_KEYS (create one with `gateway keys generate`).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# gateway/docs/errors.md links to the repository's docs/errors.md (served at /docs/errors): the link's target too.
COPY docs/errors.md ./docs/errors.md
RUN pip install --no-cache-dir --prefix=/install '.[speed]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/gateway --create-home gateway
COPY --from=build /install /usr/local
ENV GATEWAY_SERVER__HOST=0.0.0.0 \
    GATEWAY_METRICS__HOST=0.0.0.0 \
    GATEWAY_LOG__FORMAT=json \
    GATEWAY_STORE__URL=sqlite:////var/lib/gateway/gateway.db \
    PYTHONUNBUFFERED=1
USER gateway
WORKDIR /var/lib/gateway
EXPOSE 8080 9091
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9091/healthz', timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve"]
