# One image for the web server, the Celery worker and Celery beat.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
RUN useradd --create-home cognitude && mkdir -p /app/var && chown -R cognitude /app/var
USER cognitude

EXPOSE 8000
# One worker per core (WEB_CONCURRENCY to change it); their Prometheus metrics meet in
# one directory, emptied at each start.
CMD ["sh", "-c", "export PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus && rm -rf $PROMETHEUS_MULTIPROC_DIR && mkdir -p $PROMETHEUS_MULTIPROC_DIR && python manage.py migrate --noinput && exec uvicorn cognitude.asgi:application --host 0.0.0.0 --port 8000 --loop uvloop --http cognitude.server:HttpProtocol --no-access-log --workers ${WEB_CONCURRENCY:-$(nproc)}"]
