"""Settings for the PowerAutomation deployment coordinator.

Every knob is an environment variable read through a helper that fails at start with
ImproperlyConfigured naming the variable. The defaults give a working single machine:
SQLite in the project folder and django-q2's ORM broker. DATABASE_URL and REDIS_URL
switch to PostgreSQL and Redis; nothing else changes.
"""

import base64
import binascii
import ipaddress
import os
import re
import secrets
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from deployments import patterns  # no Django imports: safe before the apps load
from environments import bounds, tags as tag_rules  # the same
from powerautomation import structured_logging  # the same

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def env_int(name: str, default: int, *, minimum: int = 0, maximum: int) -> int:
    """Every integer setting has a bound both ways: a huge value would overflow a date or
    a wait at run time instead of failing here, naming the variable."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    if value > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {value}")
    return value


HOUR, DAY = 3600, bounds.DAY_SECONDS


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_tags(name: str) -> list[str]:
    """Comma-separated tags (environments/tags.py); each must have a tag's shape."""
    labels = tag_rules.split_tags(env_str(name))
    malformed = [label for label in labels if not tag_rules.is_tag(label)]
    if malformed:
        raise ImproperlyConfigured(f"{name}: {tag_rules.shown(malformed[0])} is not a tag: {tag_rules.TAG_HINT}")
    if len(labels) > tag_rules.MAX_SELECTED_TAGS:
        raise ImproperlyConfigured(f"{name}: at most {tag_rules.MAX_SELECTED_TAGS} tags, not {len(labels)}")
    return labels


def local_secret_key(path: Path) -> str:
    """The key in `path`, created first if there is none: a per-installation key kept
    beside the SQLite file, so the local default is not a published key. Losing it makes
    the stored secrets unreadable, like losing the database.

    The key is written whole to a private (0600) temporary file, then hard-linked into
    place, which fails if `path` exists: the file is never readable by others, never
    seen half written, and of processes starting at once on a fresh machine one wins and
    the others read its key."""
    if not path.exists():
        key = secrets.token_urlsafe(50)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: its key is the one
        except OSError:
            _create_exclusively(path, key)  # a file system without hard links
        finally:
            os.unlink(temporary)
    key = _read_key(path)
    if not key:
        raise ImproperlyConfigured(f"{path} is empty: delete it to generate a new key (or set DJANGO_SECRET_KEY)")
    return key


def _create_exclusively(path: Path, key: str) -> None:
    """Without hard links: create the file private and only if absent (O_EXCL); a loser of
    the race may then see it before its key is written, which _read_key waits out."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as handle:
        handle.write(key)


def _read_key(path: Path, *, patience_seconds: float = 2.0) -> str:
    deadline = time.monotonic() + patience_seconds
    while True:
        key = path.read_text().strip()
        if key or time.monotonic() > deadline:
            return key
        time.sleep(0.05)


SECRET_KEY = env_str("DJANGO_SECRET_KEY") or local_secret_key(BASE_DIR / ".secret_key")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# --- HTTPS behind a TLS proxy (production; README "Running on several machines") --------
# Cookies only over HTTPS, HTTP redirected to HTTPS, HSTS. The proxy must set the header
# named by DJANGO_SECURE_PROXY_SSL_HEADER (e.g. X-Forwarded-Proto: https) and strip it
# from clients' requests, or any client could claim HTTPS.
SESSION_COOKIE_SECURE = env_bool("DJANGO_SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("DJANGO_CSRF_COOKIE_SECURE", False)
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, maximum=2 * 365 * DAY)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)


def _proxy_ssl_header() -> tuple[str, str] | None:
    name = env_str("DJANGO_SECURE_PROXY_SSL_HEADER").strip()
    if not name:
        return None
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise ImproperlyConfigured(
            f"DJANGO_SECURE_PROXY_SSL_HEADER must be a header name such as X-Forwarded-Proto, not {name!r}"
        )
    return ("HTTP_" + name.upper().replace("-", "_"), "https")


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header()
# Debug pages and error reports hide secrets, URLs with credentials and the notification webhook.
DEFAULT_EXCEPTION_REPORTER_FILTER = "powerautomation.debug.ExceptionReporterFilter"

INSTALLED_APPS = [
    "powerautomation.admin_app.AdminConfig",  # the admin, its modules imported by the URLconf
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_q",
    # The project's apps, bottom layer first; each imports only from those above it here.
    "accounts",
    "environments",
    "deployments",
    "console",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "powerautomation.middleware.RejectNulCharactersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "powerautomation.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
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

WSGI_APPLICATION = "powerautomation.wsgi.application"


def _database() -> dict:
    url = env_str("DATABASE_URL")
    if not url:
        url = f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
    try:
        config = dj_database_url.parse(url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, maximum=DAY))
    except Exception as exc:  # the parser raises several types; all mean a bad URL
        raise ImproperlyConfigured(f"DATABASE_URL is not a database URL: {exc}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # django-q2's ORM broker and 200 reporting environments write at once: WAL lets
        # readers go on while one writes, IMMEDIATE takes the write lock up front so a
        # transaction never fails half way with "database is locked", and the busy timeout
        # makes writers queue instead of erroring.
        config["OPTIONS"] = {
            "transaction_mode": "IMMEDIATE",
            "timeout": env_int("SQLITE_BUSY_TIMEOUT", 20, minimum=1, maximum=HOUR),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        test_name = env_str("DATABASE_TEST_NAME")
        if test_name:
            # End-to-end tests start a separate qcluster that must see the test database.
            config["TEST"] = {"NAME": test_name}
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
# Where collectstatic (`make run`) puts the static files and their manifest.
STATIC_ROOT = Path(env_str("STATIC_ROOT") or BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "powerautomation.staticfiles.StaticFilesStorage"},
}
# Never collected (`migrate` alone): WhiteNoise serves the apps' own static folders.
WHITENOISE_USE_FINDERS = DEBUG or not (STATIC_ROOT / "staticfiles.json").exists()

# --- Secrets at rest -------------------------------------------------------------------
# FIELD_ENCRYPTION_KEY: one or more comma-separated Fernet keys, newest first (rotation).
# Unset: a key derived from SECRET_KEY, good for the single-machine default.
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEY", [])

# --- SSH -------------------------------------------------------------------------------
SSH_KNOWN_HOSTS = env_str("SSH_KNOWN_HOSTS") or str(Path.home() / ".ssh" / "known_hosts")
SSH_CONNECT_TIMEOUT = env_int("SSH_CONNECT_TIMEOUT", 10, minimum=1, maximum=int(bounds.CONNECT_TIMEOUT.maximum))

# --- HTTP API, webhook and callbacks -----------------------------------------------------
# The platform's address as the local environments reach it: callback URLs are built on it.
PLATFORM_BASE_URL = env_str("PLATFORM_BASE_URL", "http://127.0.0.1:8000").rstrip("/")
if PLATFORM_BASE_URL and not PLATFORM_BASE_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("PLATFORM_BASE_URL must start with http:// or https:// (or be empty: no callbacks)")
# A CA bundle for verifying agents' TLS certificates (default: the system's / certifi's).
HTTP_CA_BUNDLE = env_str("HTTP_CA_BUNDLE")
if HTTP_CA_BUNDLE and not os.path.isfile(HTTP_CA_BUNDLE):
    raise ImproperlyConfigured(f"HTTP_CA_BUNDLE: no such file {HTTP_CA_BUNDLE!r}")
# Seconds an agent may take to answer a trigger request (not the run: that is the timeout).
HTTP_TRIGGER_TIMEOUT = env_int("HTTP_TRIGGER_TIMEOUT", 30, minimum=1, maximum=HOUR)
# Minutes between scheduled health checks of every enabled environment.
HEALTH_CHECK_INTERVAL_MINUTES = env_int("HEALTH_CHECK_INTERVAL_MINUTES", 5, minimum=1, maximum=DAY // 60)

# --- The coordinator -------------------------------------------------------------------
# How many environments one coordination triggers at once when the config file's
# deployment_settings.parallel_limit does not say. Threads inside one task, so the
# django-q2 worker count never caps it.
DEPLOYMENT_PARALLEL_LIMIT = env_int(
    "DEPLOYMENT_PARALLEL_LIMIT", 256, minimum=1, maximum=int(bounds.PARALLEL_LIMIT.maximum)
)
# Crash safety. Each coordinator task renews a lease every third of this; when a worker
# dies its lease expires and the reaper (every minute, and at every worker start) marks
# its started environments interrupted and hands the coordination to a live worker.
DEPLOYMENT_LEASE_SECONDS = env_int("DEPLOYMENT_LEASE_SECONDS", 30, minimum=2, maximum=HOUR)
# How long the reaper waits before queueing a coordination nobody picked up again.
DEPLOYMENT_REQUEUE_SECONDS = env_int("DEPLOYMENT_REQUEUE_SECONDS", 60, minimum=1, maximum=DAY)
# SIGTERM to a worker: running sessions get this long to finish, then are hung up and
# marked interrupted; environments not started yet go to another worker.
DEPLOYMENT_SHUTDOWN_GRACE_SECONDS = env_int("DEPLOYMENT_SHUTDOWN_GRACE_SECONDS", 30, minimum=0, maximum=HOUR)
# History retention: once a day the worker deletes coordinations finished more than this
# many days ago, never an unfinished one nor an environment's last 5 (deployments/retention.py).
# 0 keeps everything. `migrate` applies it to the schedule.
HISTORY_RETENTION_DAYS = env_int("HISTORY_RETENTION_DAYS", 180, minimum=0, maximum=36_500)
# Tasks sharing one coordination's deliveries (more spread a large fan-out over several
# worker processes or clusters; each claims targets with a conditional update).
DEPLOYMENT_TASKS_PER_COORDINATION = env_int("DEPLOYMENT_TASKS_PER_COORDINATION", 1, minimum=1, maximum=64)
# A polling agent silent this long (no heartbeat, no output) loses its run: agent_lost.
AGENT_HEARTBEAT_TIMEOUT_SECONDS = env_int("AGENT_HEARTBEAT_TIMEOUT_SECONDS", 60, minimum=4, maximum=DAY)
# Bytes of each environment's output kept per coordination: past this, its first and last
# halves (deployments/script_output.py). The cap never fails a run.
DEPLOYMENT_OUTPUT_MAX_BYTES = env_int(
    "DEPLOYMENT_OUTPUT_MAX_BYTES", 10 * 1024 * 1024, minimum=1024, maximum=1024 * 1024 * 1024
)
# Bytes of the output's end shown inline (the admin's row, the API's `output_tail`).
# A record carries only this (the whole output has its own endpoint): 100 environments of
# a coordination's record stay a few hundred KB at most.
DEPLOYMENT_OUTPUT_TAIL_BYTES = env_int("DEPLOYMENT_OUTPUT_TAIL_BYTES", 4096, minimum=1024, maximum=16 * 1024 * 1024)

# --- EC2, auto-deploy, notifications ---------------------------------------------------
# The EC2 stage (a coordination's ec2_deployment_config: wait for an instance or launch
# one) uses boto3's standard chain for credentials and region (AWS_ACCESS_KEY_ID, AWS_PROFILE,
# an instance role, AWS_DEFAULT_REGION, ...); AWS_ENDPOINT_URL points it at an emulator.
# It may take this long, from the coordination's start, before it fails with a timeout.
EC2_STAGE_TIMEOUT_SECONDS = env_int("EC2_STAGE_TIMEOUT_SECONDS", 900, minimum=1, maximum=DAY)
# Seconds between two looks at the instance (and at platform_health_url).
EC2_POLL_SECONDS = env_int("EC2_POLL_SECONDS", 5, minimum=1, maximum=HOUR)
# AUTO_DEPLOY_ON_STARTUP=true: the first web or worker process that starts with a
# DEPLOYMENT_VERSION no coordination has yet triggers one deployment of it to every enabled
# environment (once per version, whatever the number of processes and machines).
AUTO_DEPLOY_ON_STARTUP = env_bool("AUTO_DEPLOY_ON_STARTUP", False)
DEPLOYMENT_VERSION = env_str("DEPLOYMENT_VERSION").strip()
if AUTO_DEPLOY_ON_STARTUP and not patterns.matches(patterns.VERSION, DEPLOYMENT_VERSION):
    raise ImproperlyConfigured(
        f"AUTO_DEPLOY_ON_STARTUP=true needs DEPLOYMENT_VERSION: {patterns.VERSION_HINT} (got {DEPLOYMENT_VERSION!r})"
    )
# Which environments the auto-deploy takes: with AUTO_DEPLOY_TAGS, only the enabled ones
# with any of them; AUTO_DEPLOY_EXCLUDE_TAGS leaves out those with any of its tags. A tag no
# environment has is logged at start and nothing is deployed (a later start tries again).
AUTO_DEPLOY_TAGS = env_tags("AUTO_DEPLOY_TAGS")
AUTO_DEPLOY_EXCLUDE_TAGS = env_tags("AUTO_DEPLOY_EXCLUDE_TAGS")
# Where a summary goes when a coordination ends, unless the config file's
# notification_settings.notification_webhook says (enable_notifications: false turns it off).
NOTIFICATION_WEBHOOK_URL = env_str("NOTIFICATION_WEBHOOK_URL").strip()
if NOTIFICATION_WEBHOOK_URL and not NOTIFICATION_WEBHOOK_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("NOTIFICATION_WEBHOOK_URL must start with http:// or https:// (or be empty)")
# Set: notifications are signed as Standard Webhooks (whsec_<base64>, or any other string).
NOTIFICATION_WEBHOOK_SECRET = env_str("NOTIFICATION_WEBHOOK_SECRET")
if NOTIFICATION_WEBHOOK_SECRET.startswith("whsec_"):
    _encoded = NOTIFICATION_WEBHOOK_SECRET[len("whsec_") :]
    try:
        base64.b64decode(_encoded + "=" * (-len(_encoded) % 4), validate=True)
    except binascii.Error:
        raise ImproperlyConfigured(
            "NOTIFICATION_WEBHOOK_SECRET starts with whsec_ but the rest is not base64"
        ) from None
# Failed deliveries (connection errors, timeouts, 408, 429, 5xx) are retried this many
# times, waiting NOTIFICATION_RETRY_DELAY_SECONDS, then twice that, and so on.
NOTIFICATION_RETRIES = env_int("NOTIFICATION_RETRIES", 3, maximum=20)
NOTIFICATION_RETRY_DELAY_SECONDS = env_int("NOTIFICATION_RETRY_DELAY_SECONDS", 2, maximum=HOUR)
NOTIFICATION_TIMEOUT_SECONDS = env_int("NOTIFICATION_TIMEOUT_SECONDS", 10, minimum=1, maximum=300)

# --- django-q2 -------------------------------------------------------------------------
# A coordination is one task that fans out with threads. Q_TIMEOUT bounds it (the
# coordinator ends its own run a minute before); Q_RETRY, after which the ORM broker hands
# an unacknowledged task to another worker, must exceed it or a live run is started twice.
Q_TIMEOUT = env_int("Q_TIMEOUT", 7200, minimum=120, maximum=30 * DAY)
Q_RETRY = env_int("Q_RETRY", Q_TIMEOUT + 600, minimum=1, maximum=31 * DAY)
if Q_RETRY <= Q_TIMEOUT:
    raise ImproperlyConfigured(f"Q_RETRY ({Q_RETRY}) must be greater than Q_TIMEOUT ({Q_TIMEOUT})")
# How often the ORM broker (no REDIS_URL) looks for a new task when its queue is empty: a
# deployment waits half of it on average before a worker takes it. One indexed SELECT per
# poll per qcluster (~20 a second at 50 ms, a fraction of a percent of a core); Redis
# hands a task over at once (BLPOP) and ignores it.
Q_POLL_MILLISECONDS = env_int("Q_POLL_MILLISECONDS", 50, minimum=10, maximum=10_000)
# A worker whose resident memory reached this many MB during a task is replaced by a fresh
# one once the task is done. A fan-out of hundreds of SSH sessions leaves 40-60 MB in the
# worker's C heap (paramiko's and OpenSSL's, freed but not given back to the system) for as
# long as the process lives; an idle worker is about 75 MB. 0: never (django-q2 still
# replaces a worker after 500 tasks).
Q_MAX_RSS_MB = env_int("Q_MAX_RSS_MB", 100, minimum=0, maximum=1_000_000)

Q_CLUSTER = {
    "name": "powerautomation",
    "workers": env_int("Q_WORKERS", 2, minimum=1, maximum=256),
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    # A coordination task that raised is not run again by the broker: the coordinator
    # records its own failures, and a blind re-run would start scripts a second time.
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 1000,
    "poll": Q_POLL_MILLISECONDS / 1000,
    # KiB, as getrusage's ru_maxrss on Linux (macOS counts bytes: there a worker is replaced
    # after every task, which costs a fork).
    "max_rss": Q_MAX_RSS_MB * 1000 * 1000 // 1024 or None,
    "catch_up": False,
    "label": "Task queue",
}

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# --- REST API --------------------------------------------------------------------------
# Token (django-rest-knox: only a hash stored, expiry, revocable) or session authentication;
# roles ADMIN/VIEWER (groups); throttling per token; OpenAPI at /api/schema/, /api/docs/.
INSTALLED_APPS += ["knox", "django_filters", "drf_spectacular", "drf_spectacular_sidecar"]


def _env_throttle_rate(name: str, default: str) -> str:
    raw = env_str(name, default).strip()
    if not re.fullmatch(r"[1-9][0-9]{0,8}/(s|sec|second|m|min|minute|h|hour|d|day)", raw):
        raise ImproperlyConfigured(f"{name} must be a rate such as 600/minute (per s, m, h or d), not {raw!r}")
    return raw


# Days a token made by `create_api_token` lives unless it says otherwise; 0: no expiry.
API_TOKEN_TTL_DAYS = env_int("API_TOKEN_TTL_DAYS", 365, maximum=3650)
REST_KNOX = {
    "TOKEN_TTL": timedelta(days=API_TOKEN_TTL_DAYS) if API_TOKEN_TTL_DAYS else None,
    "AUTH_HEADER_PREFIX": "Token",
    "AUTO_REFRESH": False,
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "knox.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.HasRole"],
    "DEFAULT_THROTTLE_CLASSES": [
        "powerautomation.throttling.TokenRateThrottle",
        "powerautomation.throttling.AnonymousRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "token": _env_throttle_rate("API_THROTTLE_RATE", "600/minute"),
        "anon": _env_throttle_rate("API_ANON_THROTTLE_RATE", "60/minute"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # Bounded: body size, nesting depth, duplicate keys (powerautomation/json_input.py).
    "DEFAULT_PARSER_CLASSES": ["powerautomation.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "powerautomation.api.exception_handler",
    # Behind a reverse proxy, the number of proxies whose X-Forwarded-For to trust for
    # the anonymous limit's client address (default: none, the connection's address).
    # 0, not None: DRF's None would take X-Forwarded-For from any client as its address.
    "NUM_PROXIES": env_int("API_NUM_PROXIES", 0, maximum=10),
}
# The HTTP API's version (GET /api/version and the OpenAPI schema). The client package
# (client/, powerautomation-client) carries the same major version and refuses another.
API_VERSION = "1.0.0"
SPECTACULAR_SETTINGS = {
    "TITLE": "PowerAutomation deployment coordinator API",
    "DESCRIPTION": (
        "Deployment management over HTTP: trigger local deployments, follow, cancel and retry them, manage "
        "environments. Authenticate with `Authorization: Token <key>` (`manage.py create_api_token`). "
        "Role ADMIN may do everything, VIEWER may read."
    ),
    "VERSION": API_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SCHEMA_PATH_PREFIX": r"/api/",
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "agentToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "A polling agent's token (its environment's agent_token): /api/agent/ only.",
            }
        }
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "powerautomation.schema.document_malformed_requests",
    ],
    # Separate request and response shapes, so write-only secrets and read-only flags show.
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the installed sidecar package, not a CDN: the page works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "CoordinationStatusEnum": "deployments.models.CoordinationStatus",
        "CoordinationOutcomeEnum": "deployments.api.filters.COORDINATION_OUTCOME_CHOICES",
        "TargetStatusEnum": "deployments.models.TargetStatus",
    },
}
# Throttle counts and django-q2's cluster stats (the health endpoint's "worker seen") must
# be shared by every process: the database by default (its table is made by a migration,
# environments 0004), Redis when REDIS_URL is set.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    # Well above what throttling and django-q2's cluster status ever hold: at the default 300
    # entries, every write culls a third of the table in key order, django-q2's keys first,
    # and a worker would stop seeing that its cluster is shutting down.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "django_cache",
            "OPTIONS": {"MAX_ENTRIES": 100_000},
        }
    }

# --- Metrics (GET /metrics, Prometheus) ------------------------------------------------
# A scrape is let in with `Authorization: Bearer <METRICS_TOKEN>` or from a client address in
# METRICS_ALLOWED_NETWORKS (comma-separated CIDRs; `none`: the token only). The client address
# is the one the API's throttling uses: the connection's, or with API_NUM_PROXIES set the one
# the trusted proxies put in X-Forwarded-For.
METRICS_TOKEN_MIN_LENGTH = 32


def _metrics_token() -> str:
    token = env_str("METRICS_TOKEN")
    if token and len(token) < METRICS_TOKEN_MIN_LENGTH:
        raise ImproperlyConfigured(
            f"METRICS_TOKEN must be at least {METRICS_TOKEN_MIN_LENGTH} characters, not {len(token)} "
            "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if token and not re.fullmatch(r"[\x21-\x7e]+", token):
        raise ImproperlyConfigured("METRICS_TOKEN may hold only printable ASCII characters without spaces")
    return token


def _metrics_networks() -> list[str]:
    networks = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])
    if [item.lower() for item in networks] == ["none"]:
        return []
    for network in networks:
        try:
            ipaddress.ip_network(network)
        except ValueError as exc:
            raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {network!r} is not a network: {exc}") from None
    return networks


METRICS_TOKEN = _metrics_token()
METRICS_ALLOWED_NETWORKS = _metrics_networks()

# --- Logging ---------------------------------------------------------------------------
LOG_LEVEL = env_str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
    raise ImproperlyConfigured(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}")

# text (default): one readable line per record; json: one JSON object per line (time, level,
# logger, message, coordination_id / environment_id when known, exception), for log shippers.
LOG_FORMAT = structured_logging.log_format()
JSON_LOGS = LOG_FORMAT == "json"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Request paths can hold an agent's callback token: blanked on Django's request loggers
    # (before any handler, ours or another's) and on our handler (whatever logged it).
    "filters": {
        "callback_tokens": {"()": "powerautomation.log_redaction.RedactCallbackTokens"},
        # The coordination and environment a record is about (structured_logging.log_context).
        "log_context": {"()": "powerautomation.structured_logging.LogContextFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "powerautomation.structured_logging.JsonFormatter"},
        "django.server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if JSON_LOGS else "plain",
            "filters": ["callback_tokens", "log_context"],
        },
        # runserver's request lines, as Django's default logging writes them.
        "django.server": {
            "class": "logging.StreamHandler",
            "formatter": "json" if JSON_LOGS else "django.server",
            "filters": ["callback_tokens"],
        },
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.request": {"filters": ["callback_tokens"]},
        "django.server": {
            "handlers": ["django.server"],
            "level": "INFO",
            "propagate": False,
            "filters": ["callback_tokens"],
        },
        # paramiko logs every transport error with tracebacks; our connector reports them.
        "paramiko": {"level": "WARNING"},
    },
}
