# The one image of every Kaapi service (web, workers, beat, Flower, migrate); see docker-compose.yml.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Tesseract's English and Hindi models for OCR of scanned documents (the engine itself comes with tesserocr).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-eng tesseract-ocr-hin \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.lock .
RUN pip install --require-hashes -r requirements.lock

COPY . .
# The admin's static files, served by WhiteNoise (settings need a key to load; this one never signs anything).
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput

RUN useradd --system --uid 1000 --home-dir /app kaapi \
    && mkdir -p /var/lib/kaapi/prometheus /var/lib/kaapi/media \
    && chown -R kaapi /var/lib/kaapi /app/var
USER kaapi
# Writable defaults for a container started without docker-compose.yml's environment.
ENV PROMETHEUS_MULTIPROC_DIR=/var/lib/kaapi/prometheus \
    MEDIA_ROOT=/var/lib/kaapi/media

EXPOSE 8000
CMD ["gunicorn", "kaapi.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "4"]
