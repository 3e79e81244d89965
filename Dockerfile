# The streammon services (monitor, trainer, CLI) for docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streaming ./streaming
COPY consumers ./consumers
RUN pip install . \
    && useradd --create-home --uid 10001 streammon

USER streammon
CMD ["streammon", "--help"]
