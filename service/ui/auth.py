"""The console's dependencies: the signed-in user of a page, and checked state changes.

Every console action goes through :class:`ConsoleAction`: a session (else 401), this session's
CSRF token in ``X-CSRF-Token`` (else 403) and the same scope the API route of that action needs
(else 403, with the message the API gives), checked by :meth:`AuthService.require`.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from service.auth import AuthService, Scope
from service.deps import context_of
from service.errors import UnauthorizedError
from service.ui.sessions import COOKIE, ConsoleUser, check_csrf

__all__ = ["AdminAction", "ConsoleAction", "PageUser", "ReadUser", "WriteAction", "page_user"]


async def page_user(request: Request) -> ConsoleUser | None:
    """The signed-in user of a request, or ``None`` (pages then redirect to sign-in)."""
    sessions = context_of(request).console
    return await asyncio.to_thread(sessions.lookup, request.cookies.get(COOKIE))


class ConsoleAction:
    """A console request that needs a session, a scope and (for state changes) the CSRF token.

    Parameters
    ----------
    needed
        The scope of the API route doing the same thing.
    csrf
        Whether the request changes state (then the CSRF token is required).
    """

    def __init__(self, needed: Scope, csrf: bool) -> None:
        self.needed: Scope = needed
        self.csrf = csrf

    async def __call__(self, request: Request) -> ConsoleUser:
        user = await page_user(request)
        if user is None:
            raise UnauthorizedError("not signed in to the console (or the session ended)")
        if self.csrf:
            check_csrf(user, request.headers.get("x-csrf-token"))
        AuthService.require(user.principal, self.needed)
        return user


PageUser = Annotated[ConsoleUser | None, Depends(page_user)]
ReadUser = Annotated[ConsoleUser, Depends(ConsoleAction("score", csrf=False))]
WriteAction = Annotated[ConsoleUser, Depends(ConsoleAction("write", csrf=True))]
AdminAction = Annotated[ConsoleUser, Depends(ConsoleAction("admin", csrf=True))]
