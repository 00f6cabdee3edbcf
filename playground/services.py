"""The playground's key: one API key of the user's, which the playground calls the API with.

The key's plaintext is never kept or shown: the playground's endpoint authenticates the browser by
its session (and CSRF token) and runs the ``/v1`` view with this key's row, so the request is
limited, admitted, metered and billed exactly as one made with the key over HTTP. The key is an
ordinary key on the user's API keys page: its limits (RPM, budget, TPM) apply to the playground,
and its name tells the playground's requests apart on the Usage page.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_create

PLAYGROUND_KEY_NAME = "Playground"


@transaction.atomic
def playground_key(user) -> ApiKey:
    """The user's playground key: the newest active key named "Playground" with the inference
    scope, else a new one (inference only, the default limits, no expiry). A revoked or expired
    one is not reused: the next playground request gets a fresh key."""
    # Lock the user's row so that two tabs asking at once make one key, not two.
    type(user).objects.select_for_update().filter(pk=user.pk).first()
    now = timezone.now()
    existing = (
        ApiKey.objects.select_related("user")
        .filter(user=user, name=PLAYGROUND_KEY_NAME, revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("-created_at", "-pk")
    )
    for api_key in existing:
        if api_key.has_scope(ApiKey.Scope.INFERENCE):
            return api_key
    # The plaintext is dropped here: nothing ever authenticates with it.
    api_key, _ = api_key_create(user=user, name=PLAYGROUND_KEY_NAME, scopes=[ApiKey.Scope.INFERENCE])
    return ApiKey.objects.select_related("user").get(pk=api_key.pk)
