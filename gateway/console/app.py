"""The console's HTTP side (Starlette): sign-in, pages, images and the two actions.

Every page but sign-in needs a session (`sessions`); every form that changes something carries
the session's CSRF token and is refused without it; sign-in has its own CSRF cookie. Pages are
server-side templates (Jinja2, every value escaped), no JavaScript; every answer says
`Cache-Control: no-store` and a Content-Security-Policy that allows nothing but this origin's
stylesheet and images. Looking at a held original is recorded in the audit trail (naming the
officer) before anything of it is shown; its images are served only for a view so recorded,
from memory. Release and purge go through `admin` as `dicom-gateway spool quarantine ...`
does, naming the officer. The log names routes and status codes, never a value.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from gateway import admin, conformance
from gateway.console import views
from gateway.console.officers import NAME, Officers
from gateway.console.sessions import Session, Sessions
from gateway.deidentify.explain import explain
from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.review import Undecodable, strip, thumbnail
from gateway.settings import Settings
from gateway.spool import State

log = get_logger("gateway.console")
COOKIE = "__Host-console"
LOGIN_COOKIE = "__Host-console-login"
MAX_FORM_BYTES = 4096
HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

Handler = Callable[[Request, Session], Awaitable[Response]]


class Console:
    def __init__(self, settings: Settings, officers: Officers, reviewing: views.Reviewing):
        self.settings = settings
        self.officers = officers
        self.reviewing = reviewing
        c = settings.console
        self.sessions = Sessions(c.session_idle_minutes * 60.0, c.session_max_hours * 3600.0)
        self.templates = Environment(
            loader=PackageLoader("gateway.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )

    def app(self) -> Starlette:
        signed = self._signed_in
        held = "/quarantine/{study:str}/{instance:str}"
        routes = [
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", signed(self.logout), methods=["POST"]),
            Route("/", signed(self.overview), methods=["GET"]),
            Route("/quarantine", signed(self.quarantine), methods=["GET"]),
            Route(held, signed(self.item), methods=["GET"]),
            Route(held + "/image/{which:str}", signed(self.image), methods=["GET"]),
            Route(held + "/release", signed(self.release), methods=["POST"]),
            Route(held + "/purge", signed(self.purge), methods=["POST"]),
            Route("/profile", signed(self.profile), methods=["GET"]),
            Route("/conformance", signed(self.conformance), methods=["GET"]),
            Route("/conformance.md", signed(self.conformance), methods=["GET"]),
            Route("/console.css", self.stylesheet, methods=["GET"]),
        ]
        return Starlette(routes=routes)

    # -- sign-in ---------------------------------------------------------------------------

    async def login_form(self, request: Request, problem: str | None = None) -> Response:
        token = secrets.token_urlsafe(32)
        response = self._page("login.html", None, status=401 if problem else 200,
                              problem=problem, csrf=token)  # fmt: skip
        response.set_cookie(LOGIN_COOKIE, token, secure=True, httponly=True, samesite="strict")
        return response

    async def login(self, request: Request) -> Response:
        try:
            return await self._login(request)
        except GatewayError:  # the audit trail could not record it: nobody is signed in
            log.warning("console.answered", status=503, reason="not-recorded")
            return self._page("error.html", None, status=503,
                              problem="The audit trail cannot record a sign-in now.")  # fmt: skip

    async def _login(self, request: Request) -> Response:
        form = await _form(request)
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not _same(form.get("csrf", ""), expected):
            return self._refused("csrf")
        name, password = form.get("name", ""), form.get("password", "")
        named = {"officer": name} if NAME.fullmatch(name) else {}
        locked = self.sessions.locked(name)
        if locked or not await run_in_threadpool(self.officers.authenticate, name, password):
            self.sessions.failed(name)
            reason = "locked" if locked else "wrong-credential"
            await run_in_threadpool(
                admin.note, self.settings, "console.sign-in-refused", reason=reason, **named
            )
            log.info("console.sign_in_refused", reason=reason)
            return await self.login_form(request, problem="The name or password is wrong.")
        await run_in_threadpool(admin.note, self.settings, "console.signed-in", officer=name)
        token = self.sessions.start(name)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="strict")
        response.delete_cookie(LOGIN_COOKIE, secure=True, httponly=True, samesite="strict")
        log.info("console.signed_in")
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        form = await _form(request)
        if not _same(form.get("csrf", ""), session.csrf):
            return self._refused("csrf")
        self.sessions.end(request.cookies.get(COOKIE))
        await run_in_threadpool(
            admin.note, self.settings, "console.signed-out", officer=session.officer
        )
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, secure=True, httponly=True, samesite="strict")
        return response

    # -- pages -----------------------------------------------------------------------------

    async def overview(self, request: Request, session: Session) -> Response:
        shown = await run_in_threadpool(views.overview, self.settings)
        return self._page("overview.html", session, o=shown,
                          quarantined=views.counts(shown.quarantined),
                          dropped=views.counts(shown.dropped))  # fmt: skip

    async def quarantine(self, request: Request, session: Session) -> Response:
        rows = await run_in_threadpool(views.quarantine, self.settings)
        done = request.query_params.get("done")
        return self._page("quarantine.html", session, rows=rows,
                          done=done if done in ("released", "purged") else None)  # fmt: skip

    async def item(self, request: Request, session: Session) -> Response:
        study, instance = _held(request)
        ref = f"{study}/{instance}"
        await run_in_threadpool(admin.note, self.settings, "console.viewed",
                                officer=session.officer, study_id=study,
                                instance_id=instance)  # fmt: skip
        reviewed = await run_in_threadpool(self.reviewing.review, ref)
        shown = await run_in_threadpool(admin.show, self.settings, State.QUARANTINE, ref)
        view = secrets.token_urlsafe(16)
        session.views[view] = ref
        while len(session.views) > 16:
            session.views.pop(next(iter(session.views)))
        return self._page("item.html", session, ref=ref, held=shown, r=reviewed, view=view,
                          frames=_frames(reviewed.original))  # fmt: skip

    async def image(self, request: Request, session: Session) -> Response:
        study, instance = _held(request)
        ref = f"{study}/{instance}"
        which = request.path_params["which"]
        if session.views.get(request.query_params.get("view", "")) != ref:
            return self._refused("view")  # only images of a page view that was recorded
        reviewed = await run_in_threadpool(self.reviewing.review, ref)
        ds = reviewed.original if which == "original.png" else None
        if which == "output.png":
            ds = reviewed.output
        if ds is None or which not in ("original.png", "output.png"):
            return Response(status_code=404, headers=HEADERS)
        boxes = reviewed.masked
        draw = strip if _frames(ds) > 1 else thumbnail
        try:
            png = await run_in_threadpool(lambda: draw(ds, boxes=boxes))
        except (Undecodable, IndexError):
            log.info("console.answered", status=404, reason="no-picture")
            return Response(status_code=404, headers=HEADERS)
        return Response(png, media_type="image/png", headers=HEADERS)

    async def release(self, request: Request, session: Session) -> Response:
        return await self._act(request, session, "release")

    async def purge(self, request: Request, session: Session) -> Response:
        return await self._act(request, session, "purge")

    async def _act(self, request: Request, session: Session, op: str) -> Response:
        form = await _form(request)
        if not _same(form.get("csrf", ""), session.csrf):
            return self._refused("csrf")
        study, instance = _held(request)
        ref = f"{study}/{instance}"
        if form.get("confirm") != "yes":
            return self._page("error.html", session, status=400,
                              problem=f"Tick the box to confirm the {op}.")  # fmt: skip
        if op == "release":
            await run_in_threadpool(admin.check_release, self.settings, ref)
            await run_in_threadpool(admin.act, self.settings, "release", State.QUARANTINE, ref,
                                    session.officer)  # fmt: skip
        else:
            await run_in_threadpool(admin.act, self.settings, "purge", State.QUARANTINE, ref,
                                    session.officer)  # fmt: skip
        self.reviewing.forget(ref)
        log.info("console.acted", op=op)
        done = "released" if op == "release" else "purged"
        return RedirectResponse(f"/quarantine?done={done}", status_code=303)

    async def profile(self, request: Request, session: Session) -> Response:
        rows = await run_in_threadpool(explain, self.settings.deidentify)
        return self._page("profile.html", session, rows=rows)

    async def conformance(self, request: Request, session: Session) -> Response:
        """The de-identification conformance statement of the running configuration (as
        `describe-profile --conformance` writes it): shown, or as Markdown to sign off."""
        site = await run_in_threadpool(conformance.site_of, self.settings, self.settings.source)
        text = conformance.statement(site, datetime.now(UTC).date())
        if request.url.path.endswith(".md"):
            headers = {**HEADERS, "Content-Disposition": 'attachment; filename="statement.md"'}
            return Response(text, media_type="text/markdown; charset=utf-8", headers=headers)
        return self._page("conformance.html", session, text=text)

    async def stylesheet(self, request: Request) -> Response:
        css = self.templates.get_template("console.css").render()
        return Response(css, media_type="text/css", headers=HEADERS)

    # -- plumbing --------------------------------------------------------------------------

    def _signed_in(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def checked(request: Request) -> Response:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                log.info("console.answered", status=303, reason="not-signed-in")
                return RedirectResponse("/login", status_code=303, headers=HEADERS)
            try:
                return await handler(request, session)
            except GatewayError as exc:  # messages name refs and reason codes, never values
                log.info("console.answered", status=409, reason="refused")
                return self._page("error.html", session, status=409, problem=str(exc))

        return checked

    def _page(
        self, name: str, session: Session | None, status: int = 200, **values: Any
    ) -> HTMLResponse:
        html = self.templates.get_template(name).render(
            officer=session.officer if session else None,
            csrf_token=session.csrf if session else None,
            **values,
        )
        return HTMLResponse(html, status_code=status, headers=HEADERS)

    def _refused(self, reason: str) -> Response:
        log.info("console.answered", status=403, reason=reason)
        return self._page("error.html", None, status=403, problem="Refused.")


def _same(given: str, expected: str) -> bool:
    """A token compared in constant time (as bytes: a form may hold any text)."""
    return secrets.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _held(request: Request) -> tuple[str, str]:
    study, instance = request.path_params["study"], request.path_params["instance"]
    if not (_is_spool_id(study) and _is_spool_id(instance)):
        raise GatewayError("not a held item")
    return study, instance


def _is_spool_id(text: str) -> bool:
    return 16 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)


def _frames(ds: Any) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the only kind the console's pages send), bounded in size."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    if request.headers.get("content-type", "").split(";")[0] != (
        "application/x-www-form-urlencoded"
    ):
        return {}
    parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in parsed.items()}
