"""Campaigns: the platform extension of :mod:`cipherseg.messaging` (ARCHITECTURE section 6).

Registered in :data:`cipherseg.platform.app.PLATFORM_EXTENSIONS`: adds the campaign pages
(merchant: compose with live preview, audience, one-click send, reports with a delivered
chart; operator: approval, pause/resume, reports), opt-out administration, the Kannel
callbacks, the ``campaign`` background job and navigation links.

>>> from cipherseg.platform.campaigns import nav, router
>>> any(r.path == "/gateway/kannel/dlr" for r in router.routes)
True
"""

from __future__ import annotations

from cipherseg.platform import jobs
from cipherseg.platform.campaigns.routes import router
from cipherseg.platform.campaigns.service import JOB_KIND, make_campaign_runner
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import Role

jobs.JOB_KINDS.add(JOB_KIND)

nav = {
    Role.MERCHANT: (("/merchant/campaigns", "Campaigns"),),
    Role.OPERATOR: (("/operator/campaigns", "Campaigns"), ("/opt-outs", "Opt-outs")),
    Role.ADMIN: (("/opt-outs", "Opt-outs"),),
}


def runners(ctx: PlatformContext) -> dict[str, jobs.Runner]:
    """The background job kinds this extension adds."""
    return {JOB_KIND: make_campaign_runner(ctx)}


__all__ = ["nav", "router", "runners"]
