"""Helpers shared by the page routes: rendering with the user's navigation and CSRF token."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cipherseg.platform.deps import PlatformContext
from cipherseg.platform.models import ROLE_TITLES, Role, User

NAV: dict[Role, tuple[tuple[str, str], ...]] = {
    Role.ADMIN: (("/admin/users", "Users"), ("/admin/audit", "Audit log")),
    Role.OWNER: (("/owner/data", "Data"), ("/owner/customers", "Customers"),
                 ("/owner/jobs", "Segmentation")),
    Role.MERCHANT: (("/merchant/segments", "Segments"),),
    Role.OPERATOR: (("/operator/audiences", "Audiences"),),
    Role.CENTRE: (("/centre/jobs", "Jobs"),),
}

HOME = {role: links[0][0] for role, links in NAV.items()}

NOTICES = {
    "user_created": "User created.",
    "user_updated": "User updated; their sessions were ended.",
    "user_unchanged": "Nothing to change.",
    "erased": "The customer and every row about them were erased.",
    "published": "Released to merchants.",
    "logged_out": "You are logged out.",
}


def render(request: Request, ctx: PlatformContext, name: str, status_code: int = 200,
           **context: Any) -> HTMLResponse:
    """Render a page template with the current user, navigation and CSRF token."""
    user: User | None = getattr(request.state, "user", None)
    web_session = getattr(request.state, "web_session", None)
    notice_key = request.query_params.get("done")
    base: dict[str, Any] = {
        "user": user,
        "nav": NAV.get(user.role_enum, ()) if user else (),
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
