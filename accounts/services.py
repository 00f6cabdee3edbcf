"""Creating, authenticating and revoking API keys.

A key looks like ``gpc_<prefix>_<secret>`` (see :mod:`gpucloud.credentials`): only the prefix and
a keyed hash are stored. The plaintext exists only in the return value of :func:`api_key_create`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

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


def rpm_check(rpm: int, *, allow_above_max: bool) -> None:
    """Refuse a requests-per-minute limit below 1, or above API_KEY_MAX_RPM unless staff set it."""
    if rpm < 1:
        raise ValidationError({"rpm": "The requests-per-minute limit must be at least 1."})
    if rpm > ApiKey.RPM_MAX:
        raise ValidationError({"rpm": f"The requests-per-minute limit can be at most {ApiKey.RPM_MAX}."})
    if rpm > settings.API_KEY_MAX_RPM and not allow_above_max:
        raise ValidationError(
            {
                "rpm": f"The requests-per-minute limit can be at most {settings.API_KEY_MAX_RPM}; "
                "ask an operator for a higher one."
            }
        )


def limits_check(
    *,
    max_budget: Decimal | None,
    budget_period: str,
    budget_soft_percent: int,
    tpm: int | None,
    max_parallel: int | None,
) -> None:
    """Refuse budgets and token/concurrency limits that cannot work (billing.admission enforces them)."""
    if max_budget is not None and max_budget < 0:
        raise ValidationError("The budget cannot be negative.")
    if budget_period not in ApiKey.BudgetPeriod.values:
        raise ValidationError(f"The budget period must be one of: {', '.join(ApiKey.BudgetPeriod.values)}.")
    if not 1 <= budget_soft_percent <= 100:
        raise ValidationError("The budget notice threshold is a percentage from 1 to 100.")
    if tpm is not None and not 1 <= tpm <= ApiKey.TPM_MAX:
        raise ValidationError(
            f"The tokens-per-minute limit is from 1 to {ApiKey.TPM_MAX} (leave it empty for no limit)."
        )
    if max_parallel is not None and not 1 <= max_parallel <= ApiKey.MAX_PARALLEL_MAX:
        raise ValidationError(
            f"The limit of requests in flight is from 1 to {ApiKey.MAX_PARALLEL_MAX} (leave it empty for no limit)."
        )


def api_key_create(
    *,
    user,
    name: str,
    scopes: Iterable[str] = (ApiKey.Scope.INFERENCE,),
    rpm: int | None = None,
    expires_at: datetime | None = None,
    priority: int = ApiKey.Priority.STANDARD,
    allowed_models: Iterable[str] = (),
    granted_by_staff: bool = False,
    max_budget: Decimal | None = None,
    budget_period: str = ApiKey.BudgetPeriod.MONTH,
    budget_soft_percent: int = 80,
    tpm: int | None = None,
    max_parallel: int | None = None,
    trusted_only: bool = False,
) -> tuple[ApiKey, str]:
    """Create a key for ``user``; returns the row and the plaintext key, which is never stored.

    A limit above ``API_KEY_MAX_RPM`` needs a staff owner or ``granted_by_staff`` (an operator's
    command): users cannot raise their own keys past it.
    """
    if rpm is None:
        rpm = settings.API_KEY_DEFAULT_RPM
    rpm_check(rpm, allow_above_max=granted_by_staff or user.is_staff)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("The expiry must be in the future.")
    limits_check(
        max_budget=max_budget,
        budget_period=budget_period,
        budget_soft_percent=budget_soft_percent,
        tpm=tpm,
        max_parallel=max_parallel,
    )
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
        max_budget=max_budget,
        budget_period=budget_period,
        budget_soft_percent=budget_soft_percent,
        tpm=tpm,
        max_parallel=max_parallel,
        trusted_only=trusted_only,
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


# --- Limits set through the API: a key never gives more than it has -------------------------

#: Budget periods from loosest to tightest for the same amount: $5 a day allows more than $5 a month.
_PERIOD_RANK = {ApiKey.BudgetPeriod.DAY: 0, ApiKey.BudgetPeriod.MONTH: 1, ApiKey.BudgetPeriod.TOTAL: 2}


def api_key_is_limited(api_key: ApiKey) -> bool:
    """Whether a key has a budget, a token or a concurrency limit (then it may not mint keys:
    each new key would bring limits of its own, multiplying the ones this key was given)."""
    return api_key.max_budget is not None or api_key.tpm is not None or api_key.max_parallel is not None


def api_key_loosened(api_key: ApiKey, changes: dict) -> list[str]:
    """The names of the limits that ``changes`` would loosen on ``api_key`` (raise, or remove)."""

    def looser(old, new) -> bool:
        return old is not None and (new is None or new > old)

    loosened = []
    merged = {
        name: changes.get(name, getattr(api_key, name))
        for name in ("rpm", "tpm", "max_parallel", "max_budget", "budget_period", "allowed_models", "trusted_only")
    }
    for name in ("rpm", "tpm", "max_parallel"):
        if looser(getattr(api_key, name), merged[name]):
            loosened.append(name)
    if api_key.max_budget is not None and (
        looser(api_key.max_budget, merged["max_budget"])
        or _PERIOD_RANK[merged["budget_period"]] < _PERIOD_RANK[api_key.budget_period]
    ):
        loosened.append("max_budget")
    if api_key.allowed_models and (
        not merged["allowed_models"] or not set(merged["allowed_models"]) <= set(api_key.allowed_models)
    ):
        loosened.append("allowed_models")
    if api_key.trusted_only and not merged["trusted_only"]:
        loosened.append("trusted_only")
    return loosened


def api_key_update(*, api_key: ApiKey, allow_loosen: bool, **changes) -> ApiKey:
    """Change a key's name and limits. Without ``allow_loosen`` only tighter limits are accepted
    (what a key may do to itself, or a limited key to any key)."""
    if not allow_loosen:
        loosened = api_key_loosened(api_key, changes)
        if loosened:
            raise ValidationError({loosened[0]: f"This key may only tighten '{loosened[0]}', not raise or remove it."})
    if "rpm" in changes:
        rpm_check(changes["rpm"], allow_above_max=api_key.user.is_staff)
    merged = {
        name: changes.get(name, getattr(api_key, name))
        for name in ("max_budget", "budget_period", "budget_soft_percent", "tpm", "max_parallel")
    }
    limits_check(**merged)
    if "allowed_models" in changes:
        allowed = sorted(set(changes["allowed_models"]))
        known = set(CatalogModel.objects.filter(model_id__in=allowed).values_list("model_id", flat=True))
        if set(allowed) - known:
            raise ValidationError({"allowed_models": f"Unknown model '{sorted(set(allowed) - known)[0]}'."})
        changes["allowed_models"] = allowed
    if "name" in changes:
        changes["name"] = changes["name"].strip() or "Unnamed key"
    for name, value in changes.items():
        setattr(api_key, name, value)
    api_key.save(update_fields=list(changes))
    return api_key
