"""The Starlette application: ``/metrics``, ``/healthz``, the dashboard ``/`` and its actions.

The actions (``POST /halt``, ``/resume``, ``/mute``) need the ``http.token`` of the config, in the
``X-Perpwatch-Token`` header, an ``Authorization: Bearer`` header or the form's ``token`` field
(never in the URL, so it cannot reach an access log); without it they answer 403. POST only, with
a secret the page does not contain, so another site cannot make a browser act (CSRF). A read-only
server (``perpwatch serve``) refuses every action. A server on a loopback address answers only
requests naming a loopback host (no DNS rebinding).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from perpwatch.common.symbols import normalise_symbol
from perpwatch.common.text import printable
from perpwatch.common.timeutil import parse_duration
from perpwatch.web import metrics
from perpwatch.web.backend import Backend, Forbidden
from perpwatch.web.dashboard import BadQuery, message_page, page

#: The largest form body an action reads.
MAX_FORM_BYTES = 16 * 1024
#: The longest mute the dashboard sets (as ``perpwatch mute``).
MAX_MUTE_SECONDS = 365 * 86_400
#: What the page says after an action (the redirect names one of these, never free text).
NOTICES = {
    "halted": "trading halted",
    "resumed": "trading resumed",
    "not-halted": "trading was not halted",
    "muted": "mute set (listed under Mutes)",
}


class BadForm(ValueError):
    """A form that cannot be used (too large, a bad field)."""


def create_app(backend: Backend, allowed_hosts: list[str] | None = None) -> Starlette:
    """The app over ``backend``; with ``allowed_hosts``, a request naming another host is refused
    (400): a page of another site cannot reach a loopback server by DNS rebinding."""

    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics.render(backend), media_type=metrics.CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        ok, facts = backend.health()
        return JSONResponse(facts, status_code=200 if ok else 503)

    async def dashboard(request: Request) -> Response:
        query = dict(request.query_params)
        notice = NOTICES.get(query.pop("done", ""))
        try:
            return HTMLResponse(await page(backend, query, notice))
        except BadQuery as e:
            return _message("Bad request", str(e), 400)

    async def halt(request: Request) -> Response:
        form = await _authorised(request)
        if isinstance(form, Response):
            return form
        await backend.halt(printable(form.get("reason", ""))[:200])
        return RedirectResponse("/?done=halted", status_code=303)

    async def resume(request: Request) -> Response:
        form = await _authorised(request)
        if isinstance(form, Response):
            return form
        was = await backend.resume()
        return RedirectResponse("/?done=" + ("resumed" if was else "not-halted"), status_code=303)

    async def mute(request: Request) -> Response:
        form = await _authorised(request)
        if isinstance(form, Response):
            return form
        target = form.get("target", "").strip()
        known = backend.known_targets()
        if target not in known:
            valid = ", ".join(sorted(known)) or "none yet"
            return _message(
                "Bad request", f"target {target!r}: name a strategy or strategy/rule ({valid})", 400
            )
        try:
            symbol = normalise_symbol(form["symbol"]) if form.get("symbol", "").strip() else None
        except ValueError as e:
            return _message("Bad request", f"symbol: {e}", 400)
        duration = form.get("for", "").strip()
        try:
            seconds = parse_duration(duration) / 1000
        except (ValueError, KeyError):
            seconds = 0
        if not 0 < seconds <= MAX_MUTE_SECONDS:
            return _message(
                "Bad request", f"for {duration!r}: a duration such as 30m, 2h or 1d, at most 365d", 400
            )
        await backend.mute(target, symbol, seconds)
        return RedirectResponse("/?done=muted", status_code=303)

    async def _authorised(request: Request) -> dict[str, str] | Response:
        """The action's form once the token checks out, else the refusal (403, 413 or 400)."""
        try:
            form = await _form(request)
        except BadForm as e:
            return _message("Bad request", str(e), 413 if "large" in str(e) else 400)
        given = request.headers.get("x-perpwatch-token") or _bearer(request) or form.get("token")
        try:
            backend.authorise(given)
        except Forbidden as e:
            return _message("Forbidden", str(e), 403)
        return form

    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts))
    return Starlette(
        middleware=middleware,
        routes=[
            Route("/", dashboard, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/halt", halt, methods=["POST"]),
            Route("/resume", resume, methods=["POST"]),
            Route("/mute", mute, methods=["POST"]),
        ],
    )


async def _form(request: Request) -> dict[str, str]:
    """An url-encoded form body of at most ``MAX_FORM_BYTES`` (an empty body is an empty form)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadForm(f"the form is too large (at most {MAX_FORM_BYTES} bytes)")
    if not body:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise BadForm("send the form as application/x-www-form-urlencoded")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadForm("the form is not UTF-8") from None
    return {k: v[-1] for k, v in fields.items()}


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _message(title: str, text: str, status: int) -> HTMLResponse:
    return HTMLResponse(message_page(title, text), status_code=status)
