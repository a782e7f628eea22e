"""Segmentation requests: merchants ask (and may withdraw), owners approve or decline.

Forms are parsed here into a :class:`~cipherseg.platform.services.requests.RequestForm`; a
wrong value comes back as the same form with what is wrong in words.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from cipherseg.errors import ValidationError
from cipherseg.platform.deps import (
    ContextDep,
    IdPath,
    RequestCreator,
    RequestDecider,
    SessionDep,
    client_ip,
)
from cipherseg.platform.models import SegmentationRequest, User
from cipherseg.platform.routes.common import parse_window, redirect, render
from cipherseg.platform.services import requests as service
from cipherseg.platform.services.segmentation import FEATURES

router = APIRouter(include_in_schema=False)


def parse_form(*, owner: str, purpose: str, k: str, choose_k: str, window: str,
               window_from: str, window_to: str, window_days: str,
               features: list[str]) -> service.RequestForm:
    """The merchant's form as a :class:`RequestForm` (worded errors for unreadable values)."""
    k_value: int | None = None
    if choose_k != "yes":
        try:
            k_value = int(k)
        except ValueError:
            raise ValidationError("give the number of segments as a whole number (2 or more),"
                                  " or tick 'let the data owner's run choose'") from None
    asked = parse_window(window, window_from, window_to, window_days)
    return service.RequestForm(owner=owner.strip(), purpose=purpose, k=k_value,
                               features=list(features), window_from=asked.start,
                               window_to=asked.end, window_days=asked.days)


# ------------------------------------------------------------------------------ merchant
def _merchant_page(request: Request, ctx: ContextDep, db: SessionDep, merchant: User, *,
                   status_code: int = 200, error: str | None = None,
                   form: dict[str, Any] | None = None) -> Response:
    return render(request, ctx, "merchant_requests.html", status_code=status_code,
                  error=error, requests=service.for_merchant(db, merchant),
                  owners=service.owners_accepting_requests(db), features=list(FEATURES.items()),
                  max_k=ctx.settings.max_k, form=form or {})


@router.get("/merchant/requests", response_class=HTMLResponse)
def merchant_requests(request: Request, ctx: ContextDep, db: SessionDep,
                      merchant: RequestCreator) -> Response:
    """Ask a data owner for a segmentation; the status of earlier requests."""
    return _merchant_page(request, ctx, db, merchant)


@router.post("/merchant/requests", response_class=HTMLResponse)
def merchant_request_create(
        request: Request, ctx: ContextDep, db: SessionDep, merchant: RequestCreator,
        owner: Annotated[str, Form(max_length=64)] = "",
        purpose: Annotated[str, Form(max_length=2000)] = "",
        k: Annotated[str, Form(max_length=8)] = "",
        choose_k: Annotated[str, Form(max_length=8)] = "",
        window: Annotated[str, Form(max_length=8)] = "all",
        window_from: Annotated[str, Form(max_length=20)] = "",
        window_to: Annotated[str, Form(max_length=20)] = "",
        window_days: Annotated[str, Form(max_length=8)] = "",
        features: Annotated[list[str] | None, Form(max_length=32)] = None) -> Response:
    """Send the request to the chosen owner."""
    raw: dict[str, Any] = {"owner": owner, "purpose": purpose, "k": k, "choose_k": choose_k,
                           "window": window, "window_from": window_from,
                           "window_to": window_to, "window_days": window_days,
                           "features": features or []}
    try:
        form = parse_form(owner=owner, purpose=purpose, k=k, choose_k=choose_k, window=window,
                          window_from=window_from, window_to=window_to,
                          window_days=window_days, features=features or [])
        req = service.create(ctx, db, merchant, form, features=list(FEATURES),
                             ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _merchant_page(request, ctx, db, merchant, status_code=400,
                              error=f"Not sent: {exc}.", form=raw)
    return redirect(f"/merchant/requests/{req.id}?done=request_sent")


def _merchant_request(db: SessionDep, merchant: User, request_id: int) -> SegmentationRequest:
    try:
        return service.merchant_request(db, merchant, request_id)
    except LookupError:
        raise HTTPException(404, "no such request") from None


@router.get("/merchant/requests/{request_id}", response_class=HTMLResponse)
def merchant_request_page(request: Request, ctx: ContextDep, db: SessionDep,
                          merchant: RequestCreator, request_id: IdPath) -> Response:
    """One request and its status."""
    req = _merchant_request(db, merchant, request_id)
    return render(request, ctx, "request_detail.html", r=service.views(db, [req])[0],
                  side="merchant", feature_titles=FEATURES)


@router.post("/merchant/requests/{request_id}/withdraw", response_class=HTMLResponse)
def merchant_request_withdraw(request: Request, ctx: ContextDep, db: SessionDep,
                              merchant: RequestCreator, request_id: IdPath) -> Response:
    """Withdraw a request the owner has not decided yet."""
    req = _merchant_request(db, merchant, request_id)
    try:
        service.withdraw(db, merchant, req, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return render(request, ctx, "request_detail.html", status_code=409, error=str(exc),
                      r=service.views(db, [req])[0], side="merchant", feature_titles=FEATURES)
    return redirect(f"/merchant/requests/{req.id}?done=request_withdrawn")


# ------------------------------------------------------------------------------ owner
@router.get("/owner/requests", response_class=HTMLResponse)
def owner_requests(request: Request, ctx: ContextDep, db: SessionDep,
                   owner: RequestDecider) -> Response:
    """Requests from merchants: those waiting first."""
    return render(request, ctx, "owner_requests.html", requests=service.for_owner(db, owner))


def _owner_request(db: SessionDep, owner: User, request_id: int) -> SegmentationRequest:
    try:
        return service.owner_request(db, owner, request_id)
    except LookupError:
        raise HTTPException(404, "no such request") from None


def _owner_detail(request: Request, ctx: ContextDep, db: SessionDep, req: SegmentationRequest,
                  *, status_code: int = 200, error: str | None = None) -> Response:
    return render(request, ctx, "request_detail.html", status_code=status_code, error=error,
                  r=service.views(db, [req])[0], side="owner", feature_titles=FEATURES,
                  max_k=ctx.settings.max_k)


@router.get("/owner/requests/{request_id}", response_class=HTMLResponse)
def owner_request_page(request: Request, ctx: ContextDep, db: SessionDep,
                       owner: RequestDecider, request_id: IdPath) -> Response:
    """One request, with approve and decline."""
    return _owner_detail(request, ctx, db, _owner_request(db, owner, request_id))


@router.post("/owner/requests/{request_id}/approve", response_class=HTMLResponse)
def owner_request_approve(request: Request, ctx: ContextDep, db: SessionDep,
                          owner: RequestDecider, request_id: IdPath,
                          k: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Approve: the segmentation runs now and is released to the merchant when done."""
    req = _owner_request(db, owner, request_id)
    try:
        chosen = None
        if req.k is None and k.strip():
            try:
                chosen = int(k)
            except ValueError:
                raise ValidationError("give k as a whole number, or leave it empty to let "
                                      "the run choose k") from None
        job = service.approve(ctx, db, owner, req, k=chosen, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _owner_detail(request, ctx, db, req, status_code=400,
                             error=f"Not approved: {exc}.")
    return redirect(f"/owner/jobs/{job.number}?done=request_approved")


@router.post("/owner/requests/{request_id}/decline", response_class=HTMLResponse)
def owner_request_decline(request: Request, ctx: ContextDep, db: SessionDep,
                          owner: RequestDecider, request_id: IdPath,
                          reason: Annotated[str, Form(max_length=2000)] = "") -> Response:
    """Decline with a reason the merchant reads."""
    req = _owner_request(db, owner, request_id)
    try:
        service.decline(db, owner, req, reason, ip=client_ip(request))
    except ValidationError as exc:
        db.rollback()
        return _owner_detail(request, ctx, db, req, status_code=400,
                             error=f"Not declined: {exc}.")
    return redirect(f"/owner/requests/{req.id}?done=request_declined")
