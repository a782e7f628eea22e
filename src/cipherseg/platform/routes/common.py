"""Helpers shared by the page routes: rendering with the user's navigation and CSRF token."""

from __future__ import annotations

from collections.abc import Set
from datetime import date
from typing import Any
from urllib.parse import urlparse

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cipherseg.analytics.window import TimeWindow
from cipherseg.errors import ValidationError
from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import ROLE_TITLES, Job, JobKind, User
from cipherseg.platform.permissions import Permission
from cipherseg.platform.services.jobs import own_job

#: Navigation links and the permission each needs; a user sees the links their role's
#: permissions allow, in this order (extensions append theirs: ``app.create_app``).
NAV: list[tuple[str, str, Permission]] = [
    ("/owner/data", "Data", Permission.DATA_UPLOAD),
    ("/owner/customers", "Customers", Permission.CUSTOMERS_READ),
    ("/owner/jobs", "Segmentation", Permission.SEGMENT_RUN),
    ("/owner/requests", "Requests", Permission.REQUEST_DECIDE),
    ("/merchant/segments", "Segments", Permission.RELEASE_VIEW),
    ("/merchant/requests", "Requests", Permission.REQUEST_CREATE),
    ("/operator/audiences", "Audiences", Permission.AUDIENCE_VIEW),
    ("/centre/jobs", "Jobs", Permission.CENTRE_SCHEDULE),
    ("/admin/users", "Users", Permission.USERS_MANAGE),
    ("/admin/permissions", "Permissions", Permission.USERS_MANAGE),
    ("/admin/audit", "Audit log", Permission.AUDIT_READ),
]
ACCOUNT_PAGE = "/account"
#: What a job of each kind is called in messages.
JOB_NOUNS = {JobKind.IMPORT: "import", JobKind.SEGMENTATION: "segmentation",
             JobKind.JOINT: "joint segmentation", JobKind.JOINT_NODE: "cross-node joint job",
             JobKind.VERTICAL_NODE: "vertical segmentation", JobKind.CAMPAIGN: "campaign"}


def own_job_or_404(db: Any, owner: User, kind: JobKind, number: int) -> Job:
    """``owner``'s job of ``kind`` numbered ``number``; 404 when there is none (another
    owner's number finds nothing either)."""
    job = own_job(db, owner, kind, number)
    if job is None:
        raise HTTPException(404, f"no such {JOB_NOUNS[kind]}")
    return job


def nav_for(permissions: Set[Permission]) -> list[tuple[str, str]]:
    """The navigation links a holder of ``permissions`` sees (each href once)."""
    seen: set[str] = set()
    out = []
    for href, label, permission in NAV:
        if permission in permissions and href not in seen:
            seen.add(href)
            out.append((href, label))
    return out


def home_for(permissions: Set[Permission]) -> str:
    """Where a user lands after login: their first link, or their account page."""
    links = nav_for(permissions)
    return links[0][0] if links else ACCOUNT_PAGE

NOTICES = {
    "user_created": "User created.",
    "user_updated": "User updated; their sessions were ended.",
    "user_unchanged": "Nothing to change.",
    "user_unlocked": "Failed sign-ins forgotten; the user can sign in again.",
    "erased": "The customer and every row about them were erased.",
    "granted": "Released to the merchants you chose.",
    "revoked": "Release revoked; that merchant's queued messages will not be sent.",
    "password_changed": "Password changed. Your other sessions were ended.",
    "permissions_saved": "Permissions saved; they apply to every user's next page.",
    "request_sent": "Request sent to the data owner.",
    "request_approved": "Request approved: the segmentation is queued and will be released "
                        "to the merchant when it finishes.",
    "request_declined": "Request declined; the merchant sees your reason.",
    "request_withdrawn": "Request withdrawn.",
    "logged_out": "You are logged out.",
}


def render(request: Request, ctx: PlatformContext, name: str, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """Render a page template with the current user, navigation and CSRF token."""
    user: User | None = getattr(request.state, "user", None)
    web_session = getattr(request.state, "web_session", None)
    permissions: frozenset[Permission] = getattr(request.state, "permissions", frozenset())
    notice_key = request.query_params.get("done")
    base: dict[str, Any] = {
        "user": user,
        "nav": nav_for(permissions) if user and not user.must_change_password else (),
        "permissions": permissions,
        "role_title": ROLE_TITLES.get(user.role_enum, "") if user else "",
        "csrf_token": web_session.csrf_token if web_session else "",
        "notice": NOTICES.get(notice_key or ""),
        "error": None,
        "role_titles": ROLE_TITLES,
    }
    base.update(context)
    return ctx.templates.TemplateResponse(request, name, base, status_code=status_code)


def safe_next(value: str | None) -> str | None:
    """Only local absolute paths are followed after login (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//"):
        return None
    parsed = urlparse(value)
    if parsed.scheme or parsed.netloc or "\\" in value:
        return None
    return value


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _form_date(value: str, label: str) -> date | None:
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValidationError(f"the window's {label} date {value[:20]!r} is not a date "
                              "(YYYY-MM-DD)") from None


def parse_window(window: str, window_from: str, window_to: str,
                 window_days: str) -> TimeWindow:
    """A form's time window (radio ``window``: all, days or range) in words on error."""
    if window == "range":
        start, end = _form_date(window_from, "start"), _form_date(window_to, "end")
        if start is None and end is None:
            raise ValidationError("give the window's start date, end date or both")
        return TimeWindow(start=start, end=end)
    if window == "days":
        try:
            days = int(window_days)
        except ValueError:
            raise ValidationError("give the number of days as a whole number") from None
        return TimeWindow(days=days)
    if window not in ("", "all"):
        raise ValidationError("choose the time window: all history, a date range or the last "
                              "N days")
    return TimeWindow()
