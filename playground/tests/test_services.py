"""playground.services.playground_key: one key of the user's, made once and reused while it can serve."""

from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.models import ApiKey
from accounts.services import api_key_revoke
from playground.services import PLAYGROUND_KEY_NAME, playground_key

pytestmark = pytest.mark.django_db


def test_it_makes_an_inference_key_once_and_reuses_it(user):
    first = playground_key(user)
    second = playground_key(user)

    assert first.pk == second.pk
    assert (first.user, first.name, first.scopes) == (user, PLAYGROUND_KEY_NAME, [ApiKey.Scope.INFERENCE])
    assert first.expires_at is None and first.is_active
    assert ApiKey.objects.filter(user=user).count() == 1


def test_it_makes_a_new_key_after_a_revocation_or_an_expiry(user):
    revoked = playground_key(user)
    api_key_revoke(api_key=revoked)
    expired = playground_key(user)
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    current = playground_key(user)

    assert len({revoked.pk, expired.pk, current.pk}) == 3
    assert current.is_active


def test_it_does_not_take_another_users_key_or_one_without_inference(user, outsider, make_key):
    theirs = playground_key(outsider)
    make_key(user, name=PLAYGROUND_KEY_NAME, scopes=[ApiKey.Scope.MANAGEMENT])

    mine = playground_key(user)

    assert mine.pk != theirs.pk
    assert mine.user == user and mine.has_scope(ApiKey.Scope.INFERENCE)


def test_it_keeps_the_limits_the_user_set_on_it(user):
    ApiKey.objects.filter(pk=playground_key(user).pk).update(rpm=5)

    assert playground_key(user).rpm == 5
