"""The console's dependencies: the signed-in user of a page, and checked console calls.

Every console JSON call goes through :data:`Console`: a session (else 401), for a state change
this session's CSRF token in ``X-CSRF-Token`` (else 403), and the scope the one scope table
(:data:`service.scopes.ROUTE_SCOPES`) gives the route, the same as the API route doing the same
thing (else 403, with the API's message), checked by :meth:`AuthService.require`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from service.auth import AuthService
from service.deps import context_of
from service.errors import UnauthorizedError
from service.scopes import ROUTE_SCOPES
from service.ui.sessions import COOKIE, ConsoleUser, check_csrf

__all__ = ["Console", "PageUser", "console_user", "page_user"]


async def page_user(request: Request) -> ConsoleUser | None:
    """The signed-in user of a request, or ``None`` (pages then redirect to sign-in)."""
    sessions = context_of(request).console
    return await asyncio.to_thread(sessions.lookup, request.cookies.get(COOKIE))


async def console_user(request: Request) -> ConsoleUser:
    """The signed-in user of a console call, checked for CSRF and the route's scope.

    Raises
    ------
    service.errors.UnauthorizedError
        Without a live session.
    service.errors.ForbiddenError
        For a state change without this session's CSRF token, or a key whose scope is below
        the route's.
    """
    user = await page_user(request)
    if user is None:
        raise UnauthorizedError("not signed in to the console (or the session ended)")
    if request.method not in ("GET", "HEAD"):
        check_csrf(user, request.headers.get("x-csrf-token"))
    route = request.scope["route"]
    needed = ROUTE_SCOPES[(request.method, route.path)]
    if needed is not None:
        AuthService.require(user.principal, needed)
    return user


PageUser = Annotated[ConsoleUser | None, Depends(page_user)]
Console = Annotated[ConsoleUser, Depends(console_user)]
