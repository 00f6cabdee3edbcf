"""gpucloud.settings: safe defaults (DEBUG off, a generated secret key, HTTPS settings, CSP), and
the dashboard's static files served with DEBUG off."""

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from asgiref.testing import ApplicationCommunicator
from django.conf import settings as django_settings

from gpucloud.settings import generated_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent.parent
PRODUCTION = {
    "SECRET_KEY": "k5Qx2v9Wm3tYp8Lr1Hs6Jd4Nf7Bg0Zc2Xa5Ve8Ub1Io3Pl6Ky9Rt4Ew7Qz0Mn5Bv8Cx",
    "ALLOWED_HOSTS": "gpu.example.com",
    "HTTPS": "true",
}
SHOWN = [
    "DEBUG", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECRET_KEY",
]  # fmt: skip


def manage(tmp_path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """manage.py in a process of its own, with only the given settings in its environment."""
    clean = {k: v for k, v in os.environ.items() if k not in {*SHOWN, "ALLOWED_HOSTS", "HTTPS", "CSP"}}
    clean.update(GPUCLOUD_VAR_DIR=str(tmp_path / "var"), **env)
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        env=clean,
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def shown_settings(tmp_path, **env: str) -> dict:
    code = (
        f"import json; from django.conf import settings as s; print(json.dumps({{n: getattr(s, n) for n in {SHOWN}}}))"
    )
    result = manage(tmp_path, "shell", "-c", code, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- The secret key ----------------------------------------------------------------------------


def test_it_generates_a_secret_key_once(tmp_path):
    path = tmp_path / "var" / "secret_key"

    key = generated_secret_key(path)

    assert len(key) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert generated_secret_key(path) == key
    assert not [p for p in path.parent.iterdir() if p.name != "secret_key"]  # no temporary file left


def test_it_keeps_the_generated_key_across_starts(tmp_path):
    first = shown_settings(tmp_path)
    second = shown_settings(tmp_path)

    assert first["SECRET_KEY"] == second["SECRET_KEY"] == (tmp_path / "var" / "secret_key").read_text().strip()
    assert first["SECRET_KEY"] != django_settings.DEVELOPMENT_SECRET_KEY


def test_a_secret_key_from_the_environment_wins(tmp_path):
    assert shown_settings(tmp_path, SECRET_KEY=PRODUCTION["SECRET_KEY"])["SECRET_KEY"] == PRODUCTION["SECRET_KEY"]
    assert not (tmp_path / "var" / "secret_key").exists()


# --- DEBUG and HTTPS ---------------------------------------------------------------------------


def test_debug_is_off_unless_asked(tmp_path):
    assert shown_settings(tmp_path)["DEBUG"] is False
    assert shown_settings(tmp_path, DEBUG="true")["DEBUG"] is True


def test_https_turns_on_the_secure_settings(tmp_path):
    shown = shown_settings(tmp_path, HTTPS="true")

    assert shown["SECURE_SSL_REDIRECT"] is True
    assert shown["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert shown["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert shown["SESSION_COOKIE_SECURE"] is True
    assert shown["CSRF_COOKIE_SECURE"] is True


def test_each_secure_setting_can_be_set_alone(tmp_path):
    shown = shown_settings(tmp_path, HTTPS="true", SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="60")

    assert shown["SECURE_SSL_REDIRECT"] is False
    assert shown["SECURE_HSTS_SECONDS"] == 60
    assert shown["SESSION_COOKIE_SECURE"] is True


@pytest.mark.parametrize("env", [{}, {"HTTPS": "true", "DEBUG": "true"}])
def test_the_secure_settings_are_off_without_https_or_with_debug(tmp_path, env):
    shown = shown_settings(tmp_path, **env)

    assert shown["SECURE_SSL_REDIRECT"] is False
    assert shown["SECURE_HSTS_SECONDS"] == 0
    assert shown["SESSION_COOKIE_SECURE"] is False


def test_check_deploy_passes_in_production_configuration(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_check_deploy_names_what_is_missing_without_https(tmp_path):
    result = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING", **{**PRODUCTION, "HTTPS": "false"})

    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr


def test_the_development_key_is_refused_with_debug_off(tmp_path):
    result = manage(tmp_path, "check", SECRET_KEY=django_settings.DEVELOPMENT_SECRET_KEY)

    assert result.returncode != 0
    assert "gpucloud.E001" in result.stderr


# --- Content Security Policy ---------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_carry_a_strict_content_security_policy(client):
    policy = client.get("/login/")["Content-Security-Policy"]

    directives = dict(part.strip().split(" ", 1) for part in policy.split(";") if part.strip())
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe-inline" not in policy


def test_the_dashboard_has_no_inline_scripts_or_styles():
    """What the policy would block: inline <script> and <style> blocks, style="" and on*="" attributes,
    and scripts that set a style attribute."""
    for template in (BASE_DIR / "templates").rglob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), template
        assert "<style" not in text, template
        assert not re.search(r"\sstyle=", text), template
        assert not re.search(r"\son[a-z]+=", text), template
    for script in (BASE_DIR / "static" / "js").glob("*.js"):
        text = script.read_text()
        assert not re.search(r"""(setAttribute\(\s*["']style|style:\s*["']|\beval\(|new Function)""", text), script


# --- Static files with DEBUG off -----------------------------------------------------------------


def _get(application, path: str) -> tuple[int, bytes]:
    async def call():
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
        }  # fmt: skip
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": b""})
        start = await communicator.receive_output(timeout=10)
        body = b""
        while True:
            message = await communicator.receive_output(timeout=10)
            body += message.get("body", b"")
            if not message.get("more_body"):
                return start["status"], body

    return async_to_sync(call)()


@pytest.mark.parametrize("path", ["/static/css/app.css", "/static/js/app.js", "/static/js/fleet.js"])
def test_the_dashboard_gets_its_static_files_with_debug_off(path):
    from gpucloud.asgi import application

    assert django_settings.DEBUG is False
    status, body = _get(application, path)

    assert status == 200
    assert body == (BASE_DIR / "static" / path.removeprefix("/static/")).read_bytes()
