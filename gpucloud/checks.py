"""System checks that refuse unsafe configuration."""

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

# Host names that only reach this machine: DEBUG pages shown to them are shown to no one else.
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1", "testserver"}


@register(Tags.security, deploy=False)
def check_secret_key(app_configs, **kwargs):
    if not settings.DEBUG and settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
        return [
            Error(
                "DEBUG is off but SECRET_KEY is the public development key.",
                hint="Set the SECRET_KEY environment variable to a long random value, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))', or unset it "
                "to use the key generated in var/secret_key.",
                id="gpucloud.E001",
            )
        ]
    return []


def _is_local(host: str) -> bool:
    return host in LOCAL_HOSTS or host == ".localhost" or host.endswith(".localhost")


@register(Tags.security, deploy=False)
def check_debug_hosts(app_configs, **kwargs):
    if not settings.DEBUG:
        return []
    public = [host for host in settings.ALLOWED_HOSTS if not _is_local(host)]
    if not public:
        return []
    return [
        Warning(
            f"DEBUG is on and ALLOWED_HOSTS lets in {', '.join(public)}: anyone who reaches the site "
            "sees debug pages with settings and code on every error.",
            hint="Unset DEBUG (it is off by default), or keep ALLOWED_HOSTS to local names while debugging.",
            id="gpucloud.W001",
        )
    ]
