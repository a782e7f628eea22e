"""Vertical segmentation with a merchant's own node (issue 20, protocol 4.5): pages
(``/owner/vertical``, ``/merchant/vertical``), the JSON API (``/api/v1/vertical``) and the
worker's ``vertical_node`` jobs (:mod:`~cipherseg.platform.vertical.service`). A platform
extension (:data:`cipherseg.platform.app.PLATFORM_EXTENSIONS`).
"""

from __future__ import annotations

import functools
from typing import Any

from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import JobKind
from cipherseg.platform.vertical.routes import nav, router

__all__ = ["job_kinds", "nav", "router", "runners"]

#: The background job kinds this extension adds (``create_app`` registers them).
job_kinds = (JobKind.VERTICAL_NODE,)


def runners(ctx: PlatformContext) -> dict[str, Any]:
    from cipherseg.platform.services.segmentation import audited_runner
    from cipherseg.platform.vertical.service import KIND, run_vertical_job

    return {KIND: audited_runner(ctx, functools.partial(run_vertical_job, ctx))}
