"""``GET /dashboard`` (the operator page) and ``GET /admin/overview`` (its data as JSON).

Both are guarded by ``MEMSHADOW_ADMIN_KEY`` like ``/admin/*``: 403 while no admin key is
configured; otherwise the key as a bearer token (scripts) or as the password of HTTP Basic
(browsers, any user name). A missing or wrong key is a 401 whose ``WWW-Authenticate: Basic``
challenge makes a browser ask for it; the body stays OpenAI-shaped JSON. The page is
rendered on the server from the same :class:`proxy.overview.Overview` as the JSON, with
every value autoescaped (tenant names are user input), and runs no script at all: its
Content-Security-Policy forbids any.
"""

from __future__ import annotations

import base64
import binascii
import functools
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from jinja2 import Environment, PackageLoader, StrictUndefined, Template
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from proxy.errors import AuthenticationFailed
from proxy.overview import Overview, gather_overview
from proxy.services import Services, get_services

router = APIRouter()
_CHALLENGE = {"WWW-Authenticate": 'Basic realm="memshadow"'}
_PRIVATE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
_PAGE = {
    **_PRIVATE,
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}


def _as_bearer(authorization: str | None) -> str | None:
    """AdminGuard reads bearer tokens; a Basic header carries the admin key as its password.

    Anything that is not well-formed Basic is passed on unchanged for the guard to refuse
    (after it has answered 403 if the admin API is off).
    """
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return authorization
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return authorization
    _, colon, password = decoded.partition(":")
    return f"Bearer {password}" if colon and password else authorization


def operator_services(request: Request) -> Services:
    services = get_services(request)
    try:
        services.admin.check(_as_bearer(request.headers.get("authorization")))
    except AuthenticationFailed as error:
        error.headers.update(_CHALLENGE)
        raise
    return services


OperatorServices = Annotated[Services, Depends(operator_services)]


@router.get("/admin/overview")
async def overview(services: OperatorServices) -> Response:
    figures = await gather_overview(services)
    return Response(figures.model_dump_json(), media_type="application/json", headers=_PRIVATE)


@router.get("/dashboard")
async def dashboard(
    services: OperatorServices, refresh: Annotated[int, Query(ge=0, le=3600)] = 10
) -> HTMLResponse:
    """The page reloads itself every ``refresh`` seconds (``?refresh=0``: never)."""
    figures = await gather_overview(services)
    return HTMLResponse(render(figures, refresh), headers=_PAGE)


def render(figures: Overview, refresh: int) -> str:
    return _template().render(o=figures, refresh=refresh)


@functools.cache
def _template() -> Template:
    # Loaded from the installed package, so it works from a wheel as from the source tree.
    env = Environment(
        loader=PackageLoader("proxy", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=duration, mib=mib, percent=percent, when=when)
    return env.get_template("dashboard.html")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    whole = int(seconds)
    days, hours, minutes = whole // 86400, whole // 3600 % 24, whole // 60 % 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {whole % 60} s" if minutes else f"{whole} s"


def mib(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 2**20:.1f} MiB"


def percent(share: float) -> str:
    return f"{100 * share:.1f}%"


def when(moment: datetime | None) -> str:
    return "unknown" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
