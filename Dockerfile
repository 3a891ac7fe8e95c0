# dicom-gateway: non-root, read-only root filesystem friendly; the spool lives on a volume.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m venv /opt/dicom-gateway \
 && /opt/dicom-gateway/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
# uid and gid 10001: the owner that key files and volumes on the host are given
RUN groupadd --system --gid 10001 dicom-gateway \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/dicom-gateway dicom-gateway \
 && install -d -o dicom-gateway -g dicom-gateway -m 0700 /var/lib/dicom-gateway
COPY --from=build /opt/dicom-gateway /opt/dicom-gateway
COPY deploy/container/gateway.toml /etc/dicom-gateway/gateway.toml
ENV PATH=/opt/dicom-gateway/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER dicom-gateway
VOLUME ["/var/lib/dicom-gateway"]
EXPOSE 11112 9108
# Liveness from /healthz on the metrics port (no curl in the slim image). Assumes
# [metrics] port 9108, listening on 127.0.0.1 or 0.0.0.0 inside the container; other
# commands of the image (receiver, keys) should disable it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=4)"]
ENTRYPOINT ["dicom-gateway"]
CMD ["run", "--config", "/etc/dicom-gateway/gateway.toml"]
