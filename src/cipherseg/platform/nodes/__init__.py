"""This platform as a node of joint segmentations across organisations: pages
(``/owner/nodes``), the JSON API (``/api/v1/nodes``) and the worker's ``joint_node`` jobs
(:mod:`~cipherseg.platform.nodes.jobs`). A platform extension
(:data:`cipherseg.platform.app.PLATFORM_EXTENSIONS`).
"""

from __future__ import annotations

import functools
from typing import Any

from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import JobKind
from cipherseg.platform.nodes.routes import nav, router

__all__ = ["job_kinds", "nav", "router", "runners"]

#: The background job kinds this extension adds (``create_app`` registers them).
job_kinds = (JobKind.JOINT_NODE,)


def runners(ctx: PlatformContext) -> dict[str, Any]:
    from cipherseg.platform.nodes.jobs import KIND, run_node_job
    from cipherseg.platform.services.segmentation import audited_runner

    return {KIND: audited_runner(ctx, functools.partial(run_node_job, ctx))}
