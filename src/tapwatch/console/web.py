"""What API and page modules share: database transactions, templates, rendering, paging links."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from tapwatch import __version__
from tapwatch.console import rbac
from tapwatch.identify import taxonomy

T = TypeVar("T")
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals.update(
    version=__version__, role_labels=rbac.ROLE_LABELS, P=rbac,
    type_names={t.id: t.name for t in taxonomy.TYPES.values()},
)


def _fmt_time(value: Any) -> str:
    if value is None:
        return ""
    if hasattr(value, "strftime"):
        return str(value.strftime("%Y-%m-%d %H:%M:%S"))
    return str(value)[:19].replace("T", " ")


def _fmt_int(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ("" if value is None else str(value))


templates.env.filters.update(time=_fmt_time, num=_fmt_int)


def tx(request: Request) -> AbstractContextManager[Session]:
    """One transaction: committed when the block ends, rolled back on any error."""
    return request.app.state.sessions.begin()  # type: ignore[no-any-return]


def get_or_404(s: Session, model: type[T], ident: int, what: str) -> T:
    """The row of `model` with this id, else a 404 "no {what} with id {ident}".

    API routes and pages refuse a missing id in the same words, whichever model it names.
    """
    row = s.get(model, ident)
    if row is None:
        raise HTTPException(404, f"no {what} with id {ident}")
    return row


def actor(principal: rbac.Principal | None) -> str:
    return principal.username if principal is not None else "anonymous"


def render(request: Request, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    context.setdefault("nav", "")
    return templates.TemplateResponse(
        request, template, {"me": principal, "csrf": principal.csrf if principal else None, **context},
        status_code=http_status,
    )


def url_with(path: str, params: dict[str, Any], **changes: Any) -> str:
    """`path` with the current query parameters, some changed (None removes one)."""
    merged = {k: v for k, v in {**params, **changes}.items() if v not in (None, "")}
    return path + ("?" + urlencode(merged) if merged else "")


templates.env.globals["url_with"] = url_with
