"""Campaigns: the platform extension of :mod:`cipherseg.messaging` (ARCHITECTURE section 6).

Registered in :data:`cipherseg.platform.app.PLATFORM_EXTENSIONS`: adds the campaign pages
(merchant: compose with live preview, audience, one-click send, reports with a delivered
chart; operator: approval, pause/resume, reports), opt-out administration, the Kannel
callbacks, the ``campaign`` background job and navigation links.

>>> from cipherseg.platform.campaigns import nav, router
>>> any(r.path == "/gateway/kannel/dlr" for r in router.routes)
True
>>> [href for href, _label, _permission in nav]
['/merchant/campaigns', '/operator/campaigns', '/opt-outs']
"""

from __future__ import annotations

from cipherseg.platform import jobs
from cipherseg.platform.campaigns.routes import router
from cipherseg.platform.campaigns.service import (
    JOB_KIND,
    make_campaign_runner,
    stop_revoked_campaigns,
)
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.permissions import Permission

jobs.JOB_KINDS.add(JOB_KIND)

nav = (
    ("/merchant/campaigns", "Campaigns", Permission.CAMPAIGN_CREATE),
    ("/operator/campaigns", "Campaigns", Permission.CAMPAIGN_APPROVE),
    ("/opt-outs", "Opt-outs", Permission.OPTOUT_LIFT),
)
#: A revoked release stops that merchant's campaigns on it.
on_revoke = stop_revoked_campaigns


def runners(ctx: PlatformContext) -> dict[str, jobs.Runner]:
    """The background job kinds this extension adds."""
    return {JOB_KIND: make_campaign_runner(ctx)}


__all__ = ["nav", "on_revoke", "router", "runners"]
