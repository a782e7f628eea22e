"""Named permissions, which roles may hold each, and the default role-permission matrix.

Every route of the platform declares the one permission it needs
(:class:`cipherseg.platform.deps.Allow`); the matrix of which role holds which permission is
stored in ``role_permissions`` and edited by administrators on **Permissions**. Edits stay
within guard rails:

* a permission can only go to the roles listed as *eligible* for it (:data:`PERMISSIONS`).
  Owner-data permissions (uploads, customers, segmentations, releases, joint jobs, deciding
  requests) act on the holder's own customers, so only data owners are eligible; merchant
  permissions act on releases granted to the holder as a merchant;
* the administrator role keeps ``users.manage`` (otherwise nobody could edit the matrix again).

>>> Permission.SEGMENT_RUN.value
'segment.run'
>>> PERMISSIONS[Permission.SEGMENT_RUN].owner_data
True
>>> sorted(p.value for p in DEFAULT_MATRIX[Role.MERCHANT])
['campaign.create', 'release.view', 'request.create']
>>> Role.MERCHANT in PERMISSIONS[Permission.REQUEST_CREATE].eligible
True
>>> check_matrix({Role.ADMIN: set()})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cipherseg.errors.ValidationError: the Administrator role must keep users.manage ...
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Set
from dataclasses import dataclass

from cipherseg.errors import ValidationError
from cipherseg.platform.models import ROLE_TITLES, Role


class Permission(enum.StrEnum):
    """What a route needs; roles hold permissions (``role_permissions``)."""

    DATA_UPLOAD = "data.upload"
    CUSTOMERS_READ = "customers.read"
    CUSTOMERS_ERASE = "customers.erase"
    SEGMENT_RUN = "segment.run"
    SEGMENT_RELEASE = "segment.release"
    JOINT_RUN = "joint.run"
    REQUEST_DECIDE = "request.decide"
    RELEASE_VIEW = "release.view"
    REQUEST_CREATE = "request.create"
    CAMPAIGN_CREATE = "campaign.create"
    AUDIENCE_VIEW = "audience.view"
    CAMPAIGN_APPROVE = "campaign.approve"
    OPTOUT_LIFT = "optout.lift"
    CENTRE_SCHEDULE = "centre.schedule"
    AUDIT_READ = "audit.read"
    USERS_MANAGE = "users.manage"


@dataclass(frozen=True)
class PermissionInfo:
    """What a permission allows, who may hold it, who holds it by default."""

    title: str
    description: str
    eligible: frozenset[Role]
    default: frozenset[Role]

    @property
    def owner_data(self) -> bool:
        """Acts on the holder's own customer data: only data owners may hold it."""
        return self.eligible == {Role.OWNER}


def _info(title: str, description: str, eligible: Set[Role],
          default: Set[Role]) -> PermissionInfo:
    return PermissionInfo(title, description, frozenset(eligible), frozenset(default))


_OWNER = {Role.OWNER}
_MERCHANT = {Role.MERCHANT}
_STAFF = {Role.ADMIN, Role.OPERATOR}

#: Every permission, in the order the matrix shows them.
PERMISSIONS: dict[Permission, PermissionInfo] = {
    Permission.DATA_UPLOAD: _info(
        "Upload data", "download templates, upload customers and transactions", _OWNER, _OWNER),
    Permission.CUSTOMERS_READ: _info(
        "See customers", "list own customers (phone numbers masked)", _OWNER, _OWNER),
    Permission.CUSTOMERS_ERASE: _info(
        "Erase customers", "erase a customer and every row about them", _OWNER, _OWNER),
    Permission.SEGMENT_RUN: _info(
        "Run segmentations", "start encrypted segmentations of own customers, see their "
        "results, export labels", _OWNER, _OWNER),
    Permission.SEGMENT_RELEASE: _info(
        "Release segmentations", "grant a finished segmentation to named merchants and "
        "revoke grants", _OWNER, _OWNER),
    Permission.JOINT_RUN: _info(
        "Joint segmentations", "segment pooled customers with other data owners", _OWNER,
        _OWNER),
    Permission.REQUEST_DECIDE: _info(
        "Decide requests", "approve or decline merchants' segmentation requests", _OWNER,
        _OWNER),
    Permission.RELEASE_VIEW: _info(
        "See granted segments", "segments released to this merchant (profiles, sizes)",
        _MERCHANT, _MERCHANT),
    Permission.REQUEST_CREATE: _info(
        "Request segmentations", "ask a data owner for a segmentation", _MERCHANT, _MERCHANT),
    Permission.CAMPAIGN_CREATE: _info(
        "Create campaigns", "write and send SMS campaigns to granted segments", _MERCHANT,
        _MERCHANT),
    Permission.AUDIENCE_VIEW: _info(
        "See audiences", "names and sizes of released segments, counts of segmentation "
        "requests", _STAFF, {Role.OPERATOR}),
    Permission.CAMPAIGN_APPROVE: _info(
        "Approve campaigns", "see every campaign, approve, pause, resume, cancel", _STAFF,
        {Role.OPERATOR}),
    Permission.OPTOUT_LIFT: _info(
        "Manage opt-outs", "opt numbers out, suppress them, lift opt-outs", _STAFF, _STAFF),
    Permission.CENTRE_SCHEDULE: _info(
        "See the centre's schedule", "segmentation jobs' sizes and status (no values)",
        {Role.CENTRE, Role.ADMIN, Role.OPERATOR}, {Role.CENTRE}),
    Permission.AUDIT_READ: _info(
        "Read the audit log", "browse and export the audit log", _STAFF, {Role.ADMIN}),
    Permission.USERS_MANAGE: _info(
        "Manage accounts", "create users, change roles, reset passwords, edit permissions",
        {Role.ADMIN}, {Role.ADMIN}),
}

#: Role -> permissions it holds on a fresh platform (what the migration seeds).
DEFAULT_MATRIX: dict[Role, frozenset[Permission]] = {
    role: frozenset(p for p, info in PERMISSIONS.items() if role in info.default)
    for role in Role
}


def check_matrix(matrix: Mapping[Role, Set[Permission]]) -> None:
    """Refuse a matrix outside the guard rails, saying what is wrong in words."""
    for role, perms in matrix.items():
        for perm in perms:
            info = PERMISSIONS[perm]
            if role not in info.eligible:
                who = ", ".join(ROLE_TITLES[r] for r in sorted(info.eligible))
                raise ValidationError(f"{ROLE_TITLES[role]} cannot hold {perm.value} "
                                      f"({info.title.lower()}): only {who} can")
    if Permission.USERS_MANAGE not in matrix.get(Role.ADMIN, {Permission.USERS_MANAGE}):
        raise ValidationError("the Administrator role must keep users.manage (otherwise "
                              "nobody could manage accounts or permissions)")


def holds(role: Role, permission: Permission, granted: Set[Permission]) -> bool:
    """Whether ``role`` may use ``permission`` given the stored grants (eligibility is
    checked again, so a row written around the guard rails gives nothing)."""
    return permission in granted and role in PERMISSIONS[permission].eligible
