"""Per-platform campaign state: settings, the message store and the callback secrets."""

from __future__ import annotations

import weakref
from typing import Any

from cipherseg.messaging import SqlMessageStore
from cipherseg.platform.campaigns.settings import (
    CallbackSecrets,
    CampaignSettings,
    load_callback_secrets,
)
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import MESSAGING

_per_ctx: dict[int, tuple[weakref.ref[PlatformContext], dict[str, Any]]] = {}


def ctx_cache(ctx: PlatformContext) -> dict[str, Any]:
    """A dictionary that lives as long as ``ctx`` (settings, secrets, shared writers)."""
    entry = _per_ctx.get(id(ctx))
    if entry is None or entry[0]() is not ctx:
        entry = (weakref.ref(ctx), {})
        _per_ctx[id(ctx)] = entry
    return entry[1]


def campaign_settings(ctx: PlatformContext) -> CampaignSettings:
    """This context's campaign settings (from the environment unless :func:`configure`d)."""
    cache = ctx_cache(ctx)
    if "settings" not in cache:
        cache["settings"] = CampaignSettings()
    settings: CampaignSettings = cache["settings"]
    return settings


def configure(ctx: PlatformContext, settings: CampaignSettings) -> None:
    """Use ``settings`` for this context (tests, embedding)."""
    cache = ctx_cache(ctx)
    old = cache.get("callbacks")
    if old is not None:
        old.close()
    cache.clear()
    cache["settings"] = settings


def callback_secrets(ctx: PlatformContext) -> CallbackSecrets:
    """The delivery-report signer and the MO token of this platform."""
    cache = ctx_cache(ctx)
    if "secrets" not in cache:
        cache["secrets"] = load_callback_secrets(campaign_settings(ctx), ctx.settings.keys_dir)
    secrets: CallbackSecrets = cache["secrets"]
    return secrets


def store_for(ctx: PlatformContext) -> SqlMessageStore:
    """The message store on the platform's database."""
    return SqlMessageStore(ctx.engine, MESSAGING)
