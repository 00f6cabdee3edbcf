"""Receivers that keep money in step with other apps, whatever path made the change.

- A user created anywhere (dashboard, admin, ``createsuperuser``, the demo admin of
  ``runplatform``) gets the signup credit: ``signup:<user id>`` makes it once per user.
- A catalog model saved with prices that differ from the version in force starts a new price
  version (dashboard forms, admin and services all save the model). ``QuerySet.update()`` sends no
  signal: change prices through the model's ``save()``.
"""

from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from billing import services
from deployments.models import CatalogModel


@receiver(post_save, sender=settings.AUTH_USER_MODEL, dispatch_uid="billing-signup-credit")
def grant_signup_credit(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        services.signup_credit_grant(instance)


@receiver(post_save, sender=CatalogModel, dispatch_uid="billing-price-version")
def record_price_version(sender, instance, raw=False, **kwargs):
    if not raw:
        services.price_version_record(instance)
