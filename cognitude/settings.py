"""Cognitude settings: one file, driven by environment variables.

With no environment at all it runs on embedded defaults (SQLite, an in-process hot
tier, Celery tasks run inline), so `make run` works on any machine. Setting
DATABASE_URL, REDIS_URL and CELERY_BROKER_URL switches to the real services.
"""

import secrets
import ssl
import warnings
from pathlib import Path
from urllib.parse import urlsplit

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from cognitude.redis_urls import django_cache_location, is_redis_url, is_sentinel_url

env = environ.Env()

BASE_DIR = Path(__file__).resolve().parent.parent
# The embedded defaults' local state (SQLite, secrets, spool); a fresh directory is a
# fresh install.
VAR_DIR = Path(env("COGNITUDE_VAR_DIR", default=str(BASE_DIR / "var")))


def _env_value(name: str, cast, default):
    """Read one variable, turning a bad value into ImproperlyConfigured naming it."""
    try:
        return env(name, cast=cast, default=default)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(f"{name} has a bad value: {exc}") from exc


def _local_secret(filename: str, make) -> str:
    """A secret for the embedded defaults, made once and kept in var/ so restarts agree."""
    VAR_DIR.mkdir(exist_ok=True)
    path = VAR_DIR / filename
    if not path.exists():
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = _env_value("DEBUG", bool, False)
SECRET_KEY = env("SECRET_KEY", default="") or _local_secret(
    "secret_key", lambda: secrets.token_urlsafe(50)
)
ALLOWED_HOSTS = _env_value("ALLOWED_HOSTS", list, ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = _env_value("CSRF_TRUSTED_ORIGINS", list, [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "organizations",
    "caching",
    "analytics",
    "pipeline",
    "routing",
    "ratelimit",
    "alerts",
    "proxy",
    "fakeupstream",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files (admin, dashboard) from the app itself: no CDN, no separate server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "cognitude.security.ContentSecurityPolicyMiddleware",
]

# --- Security headers and TLS (README, "Security") -------------------------------------
# Always: Django's SecurityMiddleware and XFrameOptionsMiddleware send these.
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Served over HTTPS (directly or behind a TLS-terminating proxy): cookies only over
# TLS, and HSTS. Off by default, so `make run` over plain HTTP keeps working.
COGNITUDE_TLS = _env_value("COGNITUDE_TLS", bool, False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = COGNITUDE_TLS
SECURE_HSTS_SECONDS = _env_value("COGNITUDE_HSTS_SECONDS", int,
                                 31_536_000) if COGNITUDE_TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = _env_value("COGNITUDE_HSTS_INCLUDE_SUBDOMAINS", bool, False)
# Only behind a proxy that sets X-Forwarded-Proto itself (and strips the client's): then
# Django knows a request came over HTTPS. Trusting it without such a proxy lets any
# client claim HTTPS.
if _env_value("COGNITUDE_TRUST_X_FORWARDED_PROTO", bool, False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
if SECURE_HSTS_SECONDS < 0:
    raise ImproperlyConfigured("COGNITUDE_HSTS_SECONDS must be 0 or more")

ROOT_URLCONF = "cognitude.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "cognitude.wsgi.application"
ASGI_APPLICATION = "cognitude.asgi.application"

# --- Database -------------------------------------------------------------------------
try:
    DATABASES = {
        # Set but empty counts as unset, as for REDIS_URL and CELERY_BROKER_URL.
        "default": env.db_url_config(
            env.str("DATABASE_URL", default="") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}")
    }
except (ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"DATABASE_URL has a bad value: {exc}") from exc
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(exist_ok=True)
    # WAL lets the inline task thread write while requests read.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
else:
    DATABASES["default"].setdefault("OPTIONS", {})
    # A dead database must fail fast: /health promises an answer within 2 s.
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 1)
DATABASES["default"]["CONN_MAX_AGE"] = _env_value("CONN_MAX_AGE", int, 60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

# --- Hot tier and Django's cache ------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
# A Sentinel set too: redis+sentinel://host1:26379,host2:26379/mymaster/0 (redis_urls.py).
if REDIS_URL and not is_redis_url(REDIS_URL):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss://, unix:// or "
                               "redis+sentinel://host:port[,host:port...]/service[/db]")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": django_cache_location(REDIS_URL)[0],
            "KEY_PREFIX": "django",
            "OPTIONS": {
                **django_cache_location(REDIS_URL)[1],
                "SOCKET_CONNECT_TIMEOUT": 0.5,
                "SOCKET_TIMEOUT": 0.5,
                # Django's cache (sessions, dashboard) is a convenience: Redis down must
                # not take the dashboard down with it.
                "IGNORE_EXCEPTIONS": True,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ---------------------------------------------------------------------------
CELERY_BROKER_URL = env("CELERY_BROKER_URL", default="")
# No broker configured: run tasks inline, in the process that enqueues them.
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
CELERY_TASK_SERIALIZER = "orjson"  # registered in cognitude/celery.py
CELERY_ACCEPT_CONTENT = ["orjson", "json"]
CELERY_BROKER_CONNECTION_TIMEOUT = 1.0
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True  # after a drop: reconnect, for as long as it takes
# A task running when the broker drops finishes and writes its batch; its
# acknowledgement is lost with the connection, so the broker hands the message out again
# (RabbitMQ at once, Redis after the visibility timeout) and the idempotent task stores
# nothing twice. Cancelling it instead would throw away work that succeeded.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
# The longest a batch task waits between retries while the database is down. The worker
# holds the retry unacknowledged meanwhile, so with a Redis broker this must stay well
# under the visibility timeout below, or Redis hands out a second copy of it each time.
COGNITUDE_TASK_RETRY_MAX_SECONDS = 10
if CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Loses nothing to a worker or the broker dying, and survives the broker dropping
    # (cognitude/broker.py says how).
    CELERY_BROKER_TRANSPORT = "cognitude.broker:RedisTransport"
    if CELERY_BROKER_URL.startswith("rediss://"):
        # What kombu does for a rediss:// URL, which it no longer sees once the transport
        # is named: TLS, here verifying the server's certificate.
        CELERY_BROKER_USE_SSL = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Redis has no consumer acknowledgements: a message a worker took stays in an
        # "unacked" hash until acknowledged, and goes back on the queue when it has been
        # there this long (a worker died, or lost its connection, holding it). 30 s: a
        # batch task takes a few seconds at most (2,000 events; waiting behind the
        # prefetched ones; a retry held COGNITUDE_TASK_RETRY_MAX_SECONDS), so only a lost
        # batch waits this long; the sweep below finds it within 5 s more: another
        # worker has it within a minute (tests/pipeline/test_brokers.py). A task
        # outliving it is delivered twice, which the idempotent tasks make harmless.
        "visibility_timeout": 30,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,  # kombu scans on every 10th sweep by default
        # One list per queue (no task here has a priority), which a worker fetches from
        # with BLMOVE (cognitude/broker.py).
        "priority_steps": [0],
        # A hung broker (not a dead one) must not hold a worker's acknowledgement forever.
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
    }


def _redis_server(url: str) -> tuple[str | None, int | str]:
    parts = urlsplit(url)
    return ("unix", parts.path) if parts.scheme == "unix" else (parts.hostname, parts.port or 6379)


# Another database number is the same server, and eviction is the server's policy.
# (A Sentinel set's servers are known only to its Sentinels: not checked.)
if (CELERY_BROKER_URL.startswith(("redis://", "rediss://")) and REDIS_URL
        and not is_sentinel_url(REDIS_URL)
        and _redis_server(CELERY_BROKER_URL) == _redis_server(REDIS_URL)):
    raise ImproperlyConfigured(
        "CELERY_BROKER_URL must not be on the hot-tier Redis server (REDIS_URL): that "
        "server evicts keys (LRU), and the broker's queued events with them"
    )

# --- Cognitude ------------------------------------------------------------------------
COGNITUDE_VERSION = "1.0.0"
COGNITUDE_ENCRYPTION_KEYS = _env_value("COGNITUDE_ENCRYPTION_KEYS", list, []) or [
    _local_secret("encryption_key", lambda: Fernet.generate_key().decode())
]
for _key in COGNITUDE_ENCRYPTION_KEYS:
    try:
        Fernet(_key)
    except (ValueError, TypeError) as exc:
        raise ImproperlyConfigured(
            "COGNITUDE_ENCRYPTION_KEYS must be comma-separated Fernet keys "
            "(Fernet.generate_key())"
        ) from exc
COGNITUDE_ALLOW_PRIVATE_UPSTREAMS = _env_value("COGNITUDE_ALLOW_PRIVATE_UPSTREAMS", bool, False)
COGNITUDE_CACHE_TTL = _env_value("COGNITUDE_CACHE_TTL", int, 24 * 3600)
COGNITUDE_API_KEY_CACHE_SECONDS = _env_value("COGNITUDE_API_KEY_CACHE_SECONDS", float, 5.0)
COGNITUDE_MAX_BODY_BYTES = _env_value("COGNITUDE_MAX_BODY_BYTES", int, 4 * 1024 * 1024)
COGNITUDE_UPSTREAM_TIMEOUT = _env_value("COGNITUDE_UPSTREAM_TIMEOUT", float, 120.0)
COGNITUDE_REDIS_TIMEOUT = _env_value("COGNITUDE_REDIS_TIMEOUT", float, 0.1)
COGNITUDE_REDIS_BREAKER_SECONDS = _env_value("COGNITUDE_REDIS_BREAKER_SECONDS", float, 3.0)
# PostgreSQL down (cognitude/db.py): a read on the /v1 loop waits at most TIMEOUT; after
# a failure every call skips the database for BREAKER seconds; meanwhile a key (its
# routing, its organization's limits) checked within STALE seconds is trusted as it was.
COGNITUDE_DATABASE_TIMEOUT = _env_value("COGNITUDE_DATABASE_TIMEOUT", float, 1.0)
COGNITUDE_DATABASE_BREAKER_SECONDS = _env_value("COGNITUDE_DATABASE_BREAKER_SECONDS", float, 2.0)
COGNITUDE_AUTH_STALE_SECONDS = _env_value("COGNITUDE_AUTH_STALE_SECONDS", float, 300.0)
for _name in ("COGNITUDE_DATABASE_TIMEOUT", "COGNITUDE_DATABASE_BREAKER_SECONDS"):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be positive")
if COGNITUDE_AUTH_STALE_SECONDS < 0:
    raise ImproperlyConfigured("COGNITUDE_AUTH_STALE_SECONDS must be 0 or more")
COGNITUDE_HOT_TIER_MAX_BYTES = _env_value("COGNITUDE_HOT_TIER_MAX_BYTES", int, 256 * 1024 * 1024)
COGNITUDE_COALESCE_TIMEOUT = _env_value("COGNITUDE_COALESCE_TIMEOUT", float, 30.0)
COGNITUDE_EVENT_FLUSH_SECONDS = _env_value("COGNITUDE_EVENT_FLUSH_SECONDS", float, 1.0)
# Off: no RequestLog rows (no analytics, no costs); for privacy, or to measure their cost.
COGNITUDE_REQUEST_LOG = _env_value("COGNITUDE_REQUEST_LOG", bool, True)
# POST /v1/feedback looks for a request's record this long before answering 404 (records
# are written in batches, so feedback sent right after an answer may arrive first).
COGNITUDE_FEEDBACK_WAIT_SECONDS = _env_value("COGNITUDE_FEEDBACK_WAIT_SECONDS", float, 2.0)
# Empty: /metrics is open (restrict it at the network); set: scrapers send it as a Bearer.
COGNITUDE_METRICS_TOKEN = env("COGNITUDE_METRICS_TOKEN", default="")
# The event pipeline: how long a publish may wait on the broker before the batch goes to
# the local spool, how soon to try the broker again, and where the spool files live
# (one per process; several processes may share the directory).
COGNITUDE_PUBLISH_TIMEOUT = _env_value("COGNITUDE_PUBLISH_TIMEOUT", float, 1.0)
COGNITUDE_SPOOL_RETRY_SECONDS = _env_value("COGNITUDE_SPOOL_RETRY_SECONDS", float, 2.0)
COGNITUDE_SPOOL_DIR = Path(_env_value("COGNITUDE_SPOOL_DIR", str, str(VAR_DIR / "spool")))
COGNITUDE_REQUEST_LOG_RETENTION_DAYS = _env_value("COGNITUDE_REQUEST_LOG_RETENTION_DAYS",
                                                  int, 90)
# Routes (routing/, proxy/attempts.py): a target is skipped for COOLDOWN seconds after
# FAILURES consecutive failures, then probed by one request; a request starts no more
# attempts (nor waits for one) once its time budget, from the first, is spent; RETRIES
# extra rounds over the targets, BACKOFF seconds apart and doubling (with jitter, at
# least the Retry-After).
COGNITUDE_BREAKER_FAILURES = _env_value("COGNITUDE_BREAKER_FAILURES", int, 5)
COGNITUDE_BREAKER_COOLDOWN_SECONDS = _env_value("COGNITUDE_BREAKER_COOLDOWN_SECONDS", float, 30.0)
COGNITUDE_ROUTE_TIME_BUDGET_SECONDS = _env_value("COGNITUDE_ROUTE_TIME_BUDGET_SECONDS",
                                                 float, 30.0)
COGNITUDE_ROUTE_RETRIES = _env_value("COGNITUDE_ROUTE_RETRIES", int, 0)
COGNITUDE_ROUTE_BACKOFF_SECONDS = _env_value("COGNITUDE_ROUTE_BACKOFF_SECONDS", float, 0.25)
# How long a Responses API answer's id is remembered with the provider that made it, so a
# request continuing it (previous_response_id) goes back there; OpenAI keeps 30 days.
COGNITUDE_RESPONSE_AFFINITY_SECONDS = _env_value("COGNITUDE_RESPONSE_AFFINITY_SECONDS", int,
                                                 30 * 24 * 3600)
if COGNITUDE_ROUTE_RETRIES < 0:
    raise ImproperlyConfigured("COGNITUDE_ROUTE_RETRIES must be 0 or more")
# Anthropic requires max_tokens; a chat request that names none gets this many.
COGNITUDE_ANTHROPIC_DEFAULT_MAX_TOKENS = _env_value("COGNITUDE_ANTHROPIC_DEFAULT_MAX_TOKENS",
                                                    int, 4096)
# Limits and budgets (ratelimit/). Their counters belong in a Redis that never evicts
# (docker-compose gives them one, noeviction); by default they share the hot tier's,
# whose LRU may drop a window's counts under memory pressure (budgets are then rebuilt
# from the records). No Redis at all: this process's memory (the embedded defaults).
COGNITUDE_LIMITS_REDIS_URL = env("COGNITUDE_LIMITS_REDIS_URL", default=REDIS_URL)
if COGNITUDE_LIMITS_REDIS_URL and not is_redis_url(COGNITUDE_LIMITS_REDIS_URL):
    raise ImproperlyConfigured(
        "COGNITUDE_LIMITS_REDIS_URL must start with redis://, rediss://, unix:// or "
        "redis+sentinel://")
# The longest a request waits on the limits Redis before its organization's policy
# decides: fail open (served, held to per-process limits) or closed (503).
COGNITUDE_LIMITS_REDIS_TIMEOUT = _env_value("COGNITUDE_LIMITS_REDIS_TIMEOUT", float, 0.5)
# How long a process keeps an organization's limits and the price table between reads.
COGNITUDE_LIMITS_CACHE_SECONDS = _env_value("COGNITUDE_LIMITS_CACHE_SECONDS", float, 5.0)
# Tokens reserved for the answer of a request that names no max_tokens.
COGNITUDE_LIMITS_DEFAULT_COMPLETION_TOKENS = _env_value(
    "COGNITUDE_LIMITS_DEFAULT_COMPLETION_TOKENS", int, 1024)
COGNITUDE_LIMITS_COUNT_HITS = _env_value("COGNITUDE_LIMITS_COUNT_HITS", bool, True)
# A concurrency slot is a lease: a process that dies holding one gives it back after this.
COGNITUDE_LIMITS_LEASE_SECONDS = _env_value("COGNITUDE_LIMITS_LEASE_SECONDS", float, 600.0)
# How long a process hands out what one limits call took ahead (ratelimit.gate says when
# it takes it): requests, so a cache hit costs no round trip; tokens, spend and slots, so
# a miss costs none either. 0: every request its own calls.
COGNITUDE_LIMITS_GRANT_SECONDS = _env_value("COGNITUDE_LIMITS_GRANT_SECONDS", float, 0.1)
# Failed authentications a client address may make per minute (0: no limit).
COGNITUDE_LIMITS_UNAUTHENTICATED_PER_MINUTE = _env_value(
    "COGNITUDE_LIMITS_UNAUTHENTICATED_PER_MINUTE", int, 60)
for _name in ("COGNITUDE_LIMITS_DEFAULT_COMPLETION_TOKENS",
              "COGNITUDE_LIMITS_UNAUTHENTICATED_PER_MINUTE", "COGNITUDE_LIMITS_GRANT_SECONDS"):
    if globals()[_name] < 0:
        raise ImproperlyConfigured(f"{_name} must be 0 or more")
# Alert delivery (alerts/delivery.py): each receiver call waits at most TIMEOUT seconds;
# a failed delivery is tried again after BACKOFF seconds, doubling, with jitter, until
# MAX_SECONDS after the alert, then marked failed. PagerDuty's Events API v2 endpoint is
# a setting so that tests and air-gapped installs can point it elsewhere.
COGNITUDE_ALERT_DELIVERY_TIMEOUT = _env_value("COGNITUDE_ALERT_DELIVERY_TIMEOUT", float, 10.0)
COGNITUDE_ALERT_DELIVERY_BACKOFF_SECONDS = _env_value("COGNITUDE_ALERT_DELIVERY_BACKOFF_SECONDS",
                                                      float, 5.0)
COGNITUDE_ALERT_DELIVERY_MAX_SECONDS = _env_value("COGNITUDE_ALERT_DELIVERY_MAX_SECONDS",
                                                  float, 600.0)
COGNITUDE_PAGERDUTY_EVENTS_URL = _env_value("COGNITUDE_PAGERDUTY_EVENTS_URL", str,
                                            "https://events.pagerduty.com/v2/enqueue")
# Where people reach the dashboard: the links in alert messages start with it.
# Set but empty (a compose file passing it through) counts as unset.
COGNITUDE_PUBLIC_URL = (env.str("COGNITUDE_PUBLIC_URL", default="")
                        or "http://127.0.0.1:8000").rstrip("/")
# E-mail (alert notifications): EMAIL_URL (smtp://user:password@host:587,
# smtp+tls://..., smtp+ssl://..., consolemail://) or the EMAIL_HOST... variables, which
# override its parts. With neither, messages are printed on the server's console.
_email_url = env.str("EMAIL_URL", default="") or (
    "smtp://" if env.str("EMAIL_HOST", default="") else "consolemail://")
try:
    _email = env.email_url_config(_email_url)
except (ValueError, KeyError) as exc:
    raise ImproperlyConfigured(f"EMAIL_URL has a bad value: {exc}") from exc
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = env.str("EMAIL_HOST", default="") or _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _env_value("EMAIL_PORT", int, _email["EMAIL_PORT"] or 25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="") or _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = (env.str("EMAIL_HOST_PASSWORD", default="")
                       or _email["EMAIL_HOST_PASSWORD"] or "")
EMAIL_USE_TLS = _env_value("EMAIL_USE_TLS", bool, _email.get("EMAIL_USE_TLS", False))
EMAIL_USE_SSL = _env_value("EMAIL_USE_SSL", bool, _email.get("EMAIL_USE_SSL", False))
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: choose one")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="") or "Cognitude <alerts@localhost>"
# Beat's record of last runs: in var/, not in whatever directory beat was started from.
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
for _name in ("COGNITUDE_CACHE_TTL", "COGNITUDE_MAX_BODY_BYTES", "COGNITUDE_UPSTREAM_TIMEOUT",
              "COGNITUDE_REDIS_TIMEOUT", "COGNITUDE_COALESCE_TIMEOUT",
              "COGNITUDE_EVENT_FLUSH_SECONDS", "COGNITUDE_PUBLISH_TIMEOUT",
              "COGNITUDE_FEEDBACK_WAIT_SECONDS",
              "COGNITUDE_SPOOL_RETRY_SECONDS", "COGNITUDE_REQUEST_LOG_RETENTION_DAYS",
              "COGNITUDE_BREAKER_FAILURES", "COGNITUDE_BREAKER_COOLDOWN_SECONDS",
              "COGNITUDE_ROUTE_TIME_BUDGET_SECONDS", "COGNITUDE_ROUTE_BACKOFF_SECONDS",
              "COGNITUDE_RESPONSE_AFFINITY_SECONDS", "COGNITUDE_LIMITS_REDIS_TIMEOUT",
              "COGNITUDE_LIMITS_CACHE_SECONDS", "COGNITUDE_LIMITS_LEASE_SECONDS",
              "COGNITUDE_ANTHROPIC_DEFAULT_MAX_TOKENS", "COGNITUDE_ALERT_DELIVERY_TIMEOUT",
              "COGNITUDE_ALERT_DELIVERY_BACKOFF_SECONDS", "COGNITUDE_ALERT_DELIVERY_MAX_SECONDS"):
    if globals()[_name] <= 0:
        raise ImproperlyConfigured(f"{_name} must be positive")

# --- Sign-in throttling (cognitude/logins.py) ------------------------------------------
# Failed sign-ins (dashboard and admin) an account, or an address, may make before its
# sign-ins are refused (before any password hashing) for the lockout; 0: no limit.
COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT = _env_value("COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT",
                                                  int, 10)
COGNITUDE_LOGIN_FAILURES_PER_ADDRESS = _env_value("COGNITUDE_LOGIN_FAILURES_PER_ADDRESS",
                                                  int, 30)
# The failures count within this window from the first; reaching a limit locks for it.
COGNITUDE_LOGIN_LOCKOUT_SECONDS = _env_value("COGNITUDE_LOGIN_LOCKOUT_SECONDS", int, 900)
if min(COGNITUDE_LOGIN_FAILURES_PER_ACCOUNT, COGNITUDE_LOGIN_FAILURES_PER_ADDRESS) < 0:
    raise ImproperlyConfigured("COGNITUDE_LOGIN_FAILURES_PER_* must be 0 or more")
if COGNITUDE_LOGIN_LOCKOUT_SECONDS < 1:
    raise ImproperlyConfigured("COGNITUDE_LOGIN_LOCKOUT_SECONDS must be 1 or more")
AUTHENTICATION_BACKENDS = ["cognitude.logins.ThrottledModelBackend"]
# An API key's last_used_at is written at most once per this many seconds, across
# processes: requests do not each write (organizations.services._api_key_touch).
COGNITUDE_API_KEY_LAST_USED_SECONDS = _env_value("COGNITUDE_API_KEY_LAST_USED_SECONDS",
                                                 int, 60)
if COGNITUDE_API_KEY_LAST_USED_SECONDS < 1:
    raise ImproperlyConfigured("COGNITUDE_API_KEY_LAST_USED_SECONDS must be 1 or more")
# What this process serves (cognitude/asgi.py): `all`, `gateway` (/v1/, /health and
# /metrics) or `django` (everything but /v1/): run the gateway and the dashboard/admin as
# separate processes so that sign-ins' password hashing never slows /v1/.
COGNITUDE_SERVE = env("COGNITUDE_SERVE", default="all")
if COGNITUDE_SERVE not in ("all", "gateway", "django"):
    raise ImproperlyConfigured("COGNITUDE_SERVE must be all, gateway or django")

# --- The rest of Django ---------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env("STATIC_ROOT", default=str(VAR_DIR / "static"))
Path(STATIC_ROOT).mkdir(parents=True, exist_ok=True)
# Serve straight from the apps' static folders, so no collectstatic step is needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
# WhiteNoise streams files with a synchronous iterator, which Django's ASGI handler
# accepts with a warning per file; the files are small and served once per browser.
warnings.filterwarnings(
    "ignore", message="StreamingHttpResponse must consume synchronous iterators"
)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:index"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Cognitude management API",
    "DESCRIPTION": "One organization's analytics and recommendations, and the management "
                   "of its providers, model routes and API keys, by its API key or a "
                   "member's session (managing takes an admin-scoped key, or an owner or "
                   "admin to write). The /v1 proxy is OpenAI's API and is not described "
                   "here.",
    "VERSION": COGNITUDE_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # Every operation's errors, in the one shape (organizations/api.py).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "organizations.api.error_responses"],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="WARNING")},
    "loggers": {"cognitude": {"level": env("LOG_LEVEL", default="INFO")}},
}
