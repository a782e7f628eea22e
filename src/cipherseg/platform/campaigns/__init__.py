"""Campaigns: the platform extension of :mod:`cipherseg.messaging` (docs/architecture.md §6).

Registered in :data:`cipherseg.platform.app.PLATFORM_EXTENSIONS`: adds the campaign pages
(merchant: compose with live preview, audience, send now or later, reports with failure
reasons, a delivered chart and the measured lift; operator: approval, pause/resume, retry
of failures, the gateway check and test messages; data owner: the campaigns sent to its
customers and their lift), opt-out administration, the Kannel callbacks, the ``campaign``
background job, navigation links and a gateway check at start-up.

>>> from cipherseg.platform.campaigns import nav, router
>>> any(r.path == "/gateway/kannel/dlr" for r in router.routes)
True
>>> [href for href, _label, _permission in nav]
['/merchant/campaigns', '/operator/campaigns', '/owner/campaigns', '/opt-outs']
"""

from __future__ import annotations

from cipherseg.platform import jobs
from cipherseg.platform.campaigns.gateway_check import log_checks_at_startup
from cipherseg.platform.campaigns.routes import router
from cipherseg.platform.campaigns.runner import JOB_KIND, make_campaign_runner
from cipherseg.platform.campaigns.service import stop_revoked_campaigns
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.permissions import Permission

#: The background job kinds this extension adds (``create_app`` registers them).
job_kinds = (JOB_KIND,)

nav = (
    ("/merchant/campaigns", "Campaigns", Permission.CAMPAIGN_CREATE),
    ("/operator/campaigns", "Campaigns", Permission.CAMPAIGN_APPROVE),
    ("/owner/campaigns", "Campaigns", Permission.SEGMENT_RELEASE),
    ("/opt-outs", "Opt-outs", Permission.OPTOUT_LIFT),
)
#: A revoked release stops that merchant's campaigns on it.
on_revoke = stop_revoked_campaigns


def runners(ctx: PlatformContext) -> dict[str, jobs.Runner]:
    """The background job kinds this extension adds."""
    return {JOB_KIND: make_campaign_runner(ctx)}


def startup(ctx: PlatformContext) -> None:
    """When the server starts: check the SMS gateway in the background and log problems."""
    log_checks_at_startup(ctx)


__all__ = ["nav", "on_revoke", "router", "runners", "startup"]
