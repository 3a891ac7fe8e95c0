# dicom-gateway: non-root, read-only root filesystem friendly; the spool lives on a volume.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN python -m venv /opt/dicom-gateway \
 && /opt/dicom-gateway/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/dicom-gateway dicom-gateway \
 && install -d -o dicom-gateway -g dicom-gateway -m 0700 /var/lib/dicom-gateway
COPY --from=build /opt/dicom-gateway /opt/dicom-gateway
COPY deploy/container/gateway.toml /etc/dicom-gateway/gateway.toml
ENV PATH=/opt/dicom-gateway/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER dicom-gateway
VOLUME ["/var/lib/dicom-gateway"]
EXPOSE 11112 9108
ENTRYPOINT ["dicom-gateway"]
CMD ["run", "--config", "/etc/dicom-gateway/gateway.toml"]
