"""Writes of the marketplace: hosts and their join tokens and nodes, customers' trust choice,
host earnings (credited when a request is settled), payouts, and node verification."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing.money import round_money, to_money, usd
from deployments.fleet import join_token_create, node_credential_revoke
from deployments.models import JoinToken, Trust, WorkerNode
from marketplace.models import AccountPreference, EarningEntry, HostProfile, Payout

Kind = EarningEntry.Kind

# --- Hosts ------------------------------------------------------------------------------------


def host_become(*, user, display_name: str, payout_details: str = "") -> HostProfile:
    """Make ``user`` a host (or update its profile). The revenue share is the platform's default
    when the profile is made; only staff change it afterwards (admin)."""
    display_name = display_name.strip() or user.get_username()
    profile, created = HostProfile.objects.get_or_create(
        user=user, defaults={"display_name": display_name, "payout_details": payout_details}
    )
    if not created:
        profile.display_name, profile.payout_details = display_name, payout_details
        profile.save(update_fields=["display_name", "payout_details"])
    return profile


def host_join_token_create(
    *, host: HostProfile, name: str, expires_at: datetime | None = None, max_uses: int | None = None
) -> tuple[JoinToken, str]:
    """A join token for the host's own machines: its nodes are ``community`` and belong to the host."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError("The expiry must be in the future.")
    if max_uses is not None and max_uses < 1:
        raise ValidationError("The use limit must be at least 1 (or empty for no limit).")
    return join_token_create(
        name=name, created_by=host.user, trust=Trust.COMMUNITY, expires_at=expires_at, max_uses=max_uses
    )


def host_node_revoke(*, host: HostProfile, node: WorkerNode) -> None:
    """Revoke one of the host's own nodes (the caller found it with selectors.host_node_or_404)."""
    if node.owner_id != host.user_id:
        raise ValidationError("A host can revoke only its own nodes.")
    node_credential_revoke(node=node)


def host_token_revoke(*, host: HostProfile, token: JoinToken) -> None:
    from deployments.fleet import join_token_revoke

    if token.created_by_id != host.user_id:
        raise ValidationError("A host can revoke only its own join tokens.")
    join_token_revoke(token=token)


# --- Customers --------------------------------------------------------------------------------


def account_trusted_only_set(*, user, trusted_only: bool) -> AccountPreference:
    preference, _ = AccountPreference.objects.update_or_create(user=user, defaults={"trusted_only": trusted_only})
    return preference


# --- Earnings ---------------------------------------------------------------------------------


def charge_split(
    *, price, prompt_tokens: int, completion_tokens: int, cost: Decimal, worker: str, produced: dict | None
) -> list[tuple[str, int, int, Decimal]]:
    """Who produced a request's charge: ``[(node name, prompt tokens, completion tokens, charge)]``.

    ``produced`` maps each node that sent text to the completion tokens of it the client got (a
    request that failed over mid-stream has several). Each earlier node is paid its tokens at the
    output price; the node that finished (``worker``) gets the rest: the prompt and the remaining
    tokens (the engine's final count), so that the parts always add up to the charge exactly.
    """
    from billing.selectors import request_cost

    parts = []
    tokens_left, cost_left = completion_tokens, cost
    for node, tokens in (produced or {}).items():
        if not node or node == worker or tokens <= 0 or price is None:
            continue
        tokens = min(tokens, tokens_left)
        share = min(request_cost(price, 0, tokens), cost_left)
        parts.append((node, 0, tokens, share))
        tokens_left, cost_left = tokens_left - tokens, cost_left - share
    if worker:
        parts.append((worker, prompt_tokens, tokens_left, cost_left))
    return parts


def earnings_credit(*, record, price, produced: dict | None = None) -> list[EarningEntry]:
    """Credit the hosts of the community nodes that served a settled request (``record``, an
    inference.UsageRecord whose ``cost`` was charged) with their share of its charge.

    Called by billing.admission.settle inside the charge's transaction: the earning commits or
    rolls back with the charge. At most once per request and node (the idempotency key).
    """
    cost = to_money(record.cost)
    if cost <= 0:
        return []
    parts = charge_split(
        price=price,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        cost=cost,
        worker=record.worker,
        produced=produced,
    )
    names = [name for name, *_ in parts]
    nodes = {
        node.name: node
        for node in WorkerNode.objects.filter(
            name__in=names, trust=Trust.COMMUNITY, owner__isnull=False
        ).select_related("owner")
    }
    now = timezone.now()
    entries = []
    for name, prompt_tokens, completion_tokens, charge in parts:
        node = nodes.get(name)
        if node is None or charge <= 0:
            continue  # the operator's own node: nothing to share
        host = HostProfile.objects.filter(user=node.owner).first() or host_become(
            user=node.owner, display_name=node.owner.get_username()
        )
        entries.append(
            _post(
                host=host,
                kind=Kind.EARNING,
                amount=round_money(charge * host.revenue_share),
                idempotency_key=f"earning:{record.request_id}:{node.pk}",
                request_id=record.request_id,
                node=node,
                node_name=node.name,
                model=record.model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                charge=charge,
                available_at=now + timedelta(days=settings.EARNINGS_HOLD_DAYS),
                created_at=now,
            )
        )
    return entries


def _post(*, host: HostProfile, kind: str, amount: Decimal, idempotency_key: str, **fields) -> EarningEntry:
    """Append one entry, once per idempotency key (a second post returns the first)."""
    existing = EarningEntry.objects.filter(idempotency_key=idempotency_key).first()
    if existing is not None:
        return existing
    fields.setdefault("created_at", timezone.now())
    try:
        with transaction.atomic():  # a savepoint: a lost race leaves the caller's transaction usable
            return EarningEntry.objects.create(
                host=host, kind=kind, amount=to_money(amount), idempotency_key=idempotency_key, **fields
            )
    except IntegrityError:
        existing = EarningEntry.objects.filter(idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return existing


# --- Payouts ----------------------------------------------------------------------------------


def payout_request(*, host: HostProfile, amount: Decimal | None = None, now: datetime | None = None) -> Payout:
    """Ask to be paid ``amount`` (default: all that is available) of the host's available earnings.

    The host's row is locked while what is available is read and taken, so two requests at once
    cannot both take the same earnings. Refused (ValidationError) below PAYOUT_MINIMUM_USD or
    above what is available.
    """
    from marketplace.selectors import host_balances

    now = now or timezone.now()
    minimum = to_money(settings.PAYOUT_MINIMUM_USD)
    with transaction.atomic():
        host = HostProfile.objects.select_for_update().get(pk=host.pk)
        available = host_balances(host, now=now)["available"]
        amount = available if amount is None else to_money(amount)
        if amount <= 0 or amount > available:
            raise ValidationError(f"You can ask for at most {usd(available)}: that is what is available now.")
        if amount < minimum:
            raise ValidationError(
                f"The smallest payout is {usd(minimum)}; {usd(available)} is available now. "
                f"Earnings become available {settings.EARNINGS_HOLD_DAYS} days after they are earned."
            )
        payout = Payout.objects.create(host=host, amount=amount, payout_details=host.payout_details, requested_at=now)
        _post(
            host=host,
            kind=Kind.PAYOUT_REQUESTED,
            amount=-amount,
            idempotency_key=f"payout:{payout.pk}:requested",
            payout=payout,
            created_at=now,
        )
    return payout


def _payout_step(payout: Payout, *, allowed: tuple[str, ...], to: str, what: str) -> Payout:
    """Lock the payout and check it may move from its status to ``to``."""
    payout = Payout.objects.select_for_update().select_related("host").get(pk=payout.pk)
    if payout.status not in allowed:
        raise ValidationError(f"Payout #{payout.pk} is {payout.get_status_display().lower()}: it cannot be {what}.")
    return payout


def payout_approve(*, payout: Payout, staff, note: str = "") -> Payout:
    with transaction.atomic():
        payout = _payout_step(payout, allowed=(Payout.Status.REQUESTED,), to=Payout.Status.APPROVED, what="approved")
        payout.status, payout.decided_by, payout.decided_at = Payout.Status.APPROVED, staff, timezone.now()
        payout.note = note[:500] or payout.note
        payout.save(update_fields=["status", "decided_by", "decided_at", "note"])
        _post(
            host=payout.host,
            kind=Kind.PAYOUT_APPROVED,
            amount=Decimal("0"),
            idempotency_key=f"payout:{payout.pk}:approved",
            payout=payout,
            created_by=staff,
            note=note,
        )
    return payout


def payout_mark_paid(*, payout: Payout, staff, reference: str, note: str = "") -> Payout:
    reference = reference.strip()
    if not reference:
        raise ValidationError("Give the payment's reference (a transfer id, …) to mark a payout paid.")
    with transaction.atomic():
        payout = _payout_step(
            payout, allowed=(Payout.Status.REQUESTED, Payout.Status.APPROVED), to=Payout.Status.PAID, what="paid"
        )
        now = timezone.now()
        payout.status, payout.reference, payout.paid_at = Payout.Status.PAID, reference[:200], now
        if payout.decided_at is None:
            payout.decided_by, payout.decided_at = staff, now
        payout.note = note[:500] or payout.note
        payout.save(update_fields=["status", "reference", "paid_at", "decided_by", "decided_at", "note"])
        _post(
            host=payout.host,
            kind=Kind.PAYOUT_PAID,
            amount=Decimal("0"),
            idempotency_key=f"payout:{payout.pk}:paid",
            payout=payout,
            created_by=staff,
            note=f"Paid, reference {reference}"[:500],
        )
    return payout


def payout_reject(*, payout: Payout, staff, note: str = "") -> Payout:
    """Refuse a payout: its amount goes back to the host's available earnings."""
    with transaction.atomic():
        payout = _payout_step(
            payout,
            allowed=(Payout.Status.REQUESTED, Payout.Status.APPROVED),
            to=Payout.Status.REJECTED,
            what="rejected",
        )
        payout.status, payout.decided_by, payout.decided_at = Payout.Status.REJECTED, staff, timezone.now()
        payout.note = note[:500] or payout.note
        payout.save(update_fields=["status", "decided_by", "decided_at", "note"])
        _post(
            host=payout.host,
            kind=Kind.PAYOUT_REJECTED,
            amount=payout.amount,
            idempotency_key=f"payout:{payout.pk}:rejected",
            payout=payout,
            created_by=staff,
            note=note,
        )
    return payout


# --- The demo ---------------------------------------------------------------------------------

DEMO_HOST = "demo-host"


def demo_host_ensure(var_dir) -> tuple[str, str, object]:
    """The demo's GPU host (``demo-host``, its generated password kept in var/) and the file holding
    its community join token, for ``runplatform`` to join one community node with (so that the Host
    page has something to show). Returns (username, password, token file path)."""
    import secrets

    from django.contrib.auth import get_user_model

    from deployments.fleet import JOIN_TOKEN_KIND
    from gpucloud.credentials import matches, split_credential

    User = get_user_model()
    credentials = var_dir / "demo-host.txt"
    user = User.objects.filter(username=DEMO_HOST).first()
    if user is None:
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(DEMO_HOST, email="host@example.com", password=password)
        credentials.write_text(password + "\n")
        credentials.chmod(0o600)
    password = credentials.read_text().strip() if credentials.exists() else "(the password you set)"
    host = HostProfile.objects.filter(user=user).first() or host_become(
        user=user, display_name="Demo host", payout_details="(demo) IBAN XX00 0000 0000"
    )
    path = var_dir / "demo-host-join-token.txt"
    if path.exists():
        plaintext = path.read_text().strip()
        prefix = split_credential(JOIN_TOKEN_KIND, plaintext)
        token = JoinToken.objects.filter(prefix=prefix, revoked_at__isnull=True).first() if prefix else None
        if token is not None and matches(plaintext, token.hashed_token):
            return DEMO_HOST, password, path
    _, plaintext = host_join_token_create(host=host, name="Demo host's machine (runplatform)")
    path.write_text(plaintext + "\n")
    path.chmod(0o600)
    return DEMO_HOST, password, path
