"""Email settings from the environment: the console by default, SMTP once EMAIL_HOST is set, any
backend by EMAIL_BACKEND."""

import json
import subprocess
import sys

import pytest
from django.conf import settings

CODE = (
    "import json, django; from django.conf import settings; django.setup(); "
    "print(json.dumps({k: getattr(settings, k, None) for k in "
    "['EMAIL_BACKEND', 'EMAIL_HOST', 'EMAIL_PORT', 'EMAIL_USE_TLS', 'EMAIL_FILE_PATH', 'DEFAULT_FROM_EMAIL']}))"
)


def _settings(tmp_path, **env) -> dict:
    base = {"DJANGO_SETTINGS_MODULE": "gpucloud.settings", "GPUCLOUD_VAR_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    output = subprocess.run(
        [sys.executable, "-c", CODE],
        env={**base, **env},
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(output.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, {"EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}),
        (
            {
                "EMAIL_HOST": "smtp.example.com",
                "EMAIL_PORT": "587",
                "EMAIL_USE_TLS": "true",
                "DEFAULT_FROM_EMAIL": "a@b.c",
            },
            {
                "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
                "EMAIL_HOST": "smtp.example.com",
                "EMAIL_PORT": 587,
                "EMAIL_USE_TLS": True,
                "DEFAULT_FROM_EMAIL": "a@b.c",
            },
        ),
        (
            {"EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend", "EMAIL_FILE_PATH": "/tmp/mail"},
            {"EMAIL_BACKEND": "django.core.mail.backends.filebased.EmailBackend", "EMAIL_FILE_PATH": "/tmp/mail"},
        ),
    ],
)
def test_it_reads_the_environment(tmp_path, env, expected):
    values = _settings(tmp_path, SECRET_KEY="x" * 50, **env)
    assert {key: values[key] for key in expected} == expected
