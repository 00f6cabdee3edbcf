"""Creating, authenticating and revoking API keys.

A key looks like ``gpc_<prefix>_<secret>`` (see :mod:`gpucloud.credentials`): only the prefix and
a keyed hash are stored. The plaintext exists only in the return value of :func:`api_key_create`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import F
from django.utils import timezone

from accounts.models import ApiKey
from deployments.models import CatalogModel
from gpucloud.credentials import matches, new_credential, split_credential

KIND = "gpc"


def parse_scopes(scopes: Iterable[str]) -> list[str]:
    """Validate scope names; raises ValidationError naming an unknown one."""
    cleaned = []
    for scope in scopes:
        scope = scope.strip()
        if not scope:
            continue
        if scope not in ApiKey.Scope.values:
            raise ValidationError(f"Unknown scope '{scope}'. Choose from: {', '.join(ApiKey.Scope.values)}.")
        if scope not in cleaned:
            cleaned.append(scope)
    if not cleaned:
        raise ValidationError("A key needs at least one scope.")
    return cleaned


def api_key_create(
    *,
    user,
    name: str,
    scopes: Iterable[str] = (ApiKey.Scope.INFERENCE,),
    rpm: int | None = None,
    expires_at: datetime | None = None,
    priority: int = ApiKey.Priority.STANDARD,
    allowed_models: Iterable[str] = (),
) -> tuple[ApiKey, str]:
    """Create a key for ``user``; returns the row and the plaintext key, which is never stored."""
    if rpm is None:
        rpm = settings.API_KEY_DEFAULT_RPM
    if rpm < 1:
        raise ValidationError("The requests-per-minute limit must be at least 1.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("The expiry must be in the future.")
    scopes = parse_scopes(scopes)
    allowed_models = sorted(set(allowed_models))
    unknown = set(allowed_models) - set(
        CatalogModel.objects.filter(model_id__in=allowed_models).values_list("model_id", flat=True)
    )
    if unknown:
        raise ValidationError(f"Unknown model '{sorted(unknown)[0]}' in the allowed models.")
    credential = new_credential(KIND)
    api_key = ApiKey.objects.create(
        user=user,
        name=name.strip() or "Unnamed key",
        prefix=credential.prefix,
        hashed_key=credential.hashed,
        scopes=scopes,
        rpm=rpm,
        expires_at=expires_at,
        priority=priority,
        allowed_models=allowed_models,
    )
    return api_key, credential.plaintext


def api_key_lookup(raw_key: str) -> ApiKey | None:
    """Return the key that ``raw_key`` is, whatever its state, or None if it is no key of ours."""
    prefix = split_credential(KIND, raw_key)
    if prefix is None:
        return None
    api_key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    if api_key is None or not matches(raw_key, api_key.hashed_key):
        return None
    return api_key


def api_key_record_use(api_key: ApiKey) -> None:
    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=timezone.now(), request_count=F("request_count") + 1)


def api_key_revoke(*, api_key: ApiKey) -> None:
    """Revoke a key. Keys are read from the database on every request, so this is immediate."""
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
