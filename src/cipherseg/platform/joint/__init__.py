"""Joint segmentation between owner accounts of this platform (protocol 4.2), a platform
extension (:data:`cipherseg.platform.app.PLATFORM_EXTENSIONS`): the job kind and its runner
(:mod:`~cipherseg.platform.joint.service`), the pages (:mod:`~cipherseg.platform.joint.routes`)
and the navigation links.
"""

from __future__ import annotations

import functools
from typing import Any

from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.joint.routes import router
from cipherseg.platform.joint.service import run_joint_job
from cipherseg.platform.models import JobKind
from cipherseg.platform.permissions import Permission

__all__ = ["job_kinds", "nav", "router", "runners"]

#: The background job kinds this extension adds (``create_app`` registers them).
job_kinds = (JobKind.JOINT,)

nav = (("/owner/joint", "Joint segmentation", Permission.JOINT_RUN),
       ("/merchant/joint", "Joint segments", Permission.RELEASE_VIEW))


def runners(ctx: PlatformContext) -> dict[str, Any]:
    """The worker's runner of joint jobs."""
    from cipherseg.platform.services.segmentation import audited_runner

    return {JobKind.JOINT: audited_runner(ctx, functools.partial(run_joint_job, ctx))}
