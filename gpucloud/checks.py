"""System checks that refuse unsafe configuration."""

from django.conf import settings
from django.core.checks import Error, Tags, register


@register(Tags.security, deploy=False)
def check_secret_key(app_configs, **kwargs):
    if not settings.DEBUG and settings.SECRET_KEY == settings.DEVELOPMENT_SECRET_KEY:
        return [
            Error(
                "DEBUG is off but SECRET_KEY is the public development key.",
                hint="Set the SECRET_KEY environment variable to a long random value, "
                "e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
                id="gpucloud.E001",
            )
        ]
    return []
