"""gpucloud.checks: the development secret key is refused with DEBUG off; DEBUG with public hosts warns."""

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from gpucloud.checks import check_debug_hosts, check_secret_key

REAL_KEY = "k5Qx2v9Wm3tYp8Lr1Hs6Jd4Nf7Bg0Zc2Xa5Ve8Ub1Io3Pl6Ky9"


def test_it_refuses_the_development_key_with_debug_off(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = settings.DEVELOPMENT_SECRET_KEY

    errors = check_secret_key(None)

    assert [error.id for error in errors] == ["gpucloud.E001"]
    assert errors[0].is_serious()
    assert "SECRET_KEY" in errors[0].hint


def test_it_accepts_a_real_key_with_debug_off(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = REAL_KEY

    assert check_secret_key(None) == []


def test_it_accepts_the_development_key_with_debug_on(settings):
    settings.DEBUG = True
    settings.SECRET_KEY = settings.DEVELOPMENT_SECRET_KEY

    assert check_secret_key(None) == []


def test_it_is_registered(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = settings.DEVELOPMENT_SECRET_KEY

    with pytest.raises(SystemCheckError, match=r"gpucloud\.E001"):
        call_command("check")

    settings.SECRET_KEY = REAL_KEY
    call_command("check")


# --- gpucloud.W001: DEBUG on with hosts beyond this machine ----------------------------------------


@pytest.mark.parametrize("hosts", [["gpu.example.com"], ["127.0.0.1", "*"], ["localhost", "10.0.0.5"]])
def test_it_warns_when_debug_is_on_with_public_hosts(settings, hosts):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = hosts

    warnings = check_debug_hosts(None)

    assert [warning.id for warning in warnings] == ["gpucloud.W001"]
    assert not warnings[0].is_serious()


@pytest.mark.parametrize("hosts", [["127.0.0.1", "localhost", "[::1]", "testserver"], ["app.localhost"]])
def test_it_is_quiet_with_local_hosts(settings, hosts):
    settings.DEBUG = True
    settings.ALLOWED_HOSTS = hosts

    assert check_debug_hosts(None) == []


def test_it_is_quiet_with_debug_off(settings):
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["gpu.example.com"]

    assert check_debug_hosts(None) == []
