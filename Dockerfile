# Spool: one image for the web app and the workers (the command picks the role).
#   docker build -t spool .                       # CPU (onnxruntime)
#   docker build -t spool:gpu --build-arg EXTRAS=gpu .   # adds onnxruntime-gpu
FROM python:3.11-slim-bookworm

ARG EXTRAS=""
# SPOOL_HOST=0.0.0.0 so a published port reaches the app; the web then refuses to start without
# SPOOL_API_KEYS unless SPOOL_ALLOW_ANONYMOUS=1 is set (config/exposure.py, docs/security.md).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SPOOL_ASSETS_DIR=/opt/spool/assets \
    SPOOL_HOST=0.0.0.0 \
    SPOOL_PORT=8000

# espeak-ng: G2P fallback for out-of-vocabulary words; npm: fetches the voices (kokoro-js) at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng libsndfile1 nodejs npm ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY engine engine
COPY service service
COPY app app
COPY tasks tasks
COPY config config
COPY cli cli
COPY web web
RUN pip install ".${EXTRAS:+[$EXTRAS]}"

# Bake the verified model and voices into the image so containers start without network access.
RUN spool models fetch && rm -rf /root/.npm /root/.cache/pip

RUN useradd --system --uid 10001 --home /app spool && mkdir -p /app/var && chown spool /app/var
USER spool
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${SPOOL_PORT}/healthz" || exit 1

CMD ["gunicorn", "-c", "python:config.gunicorn", "app:create_app()"]
