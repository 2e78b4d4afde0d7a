"""Bearer-token scopes: `submit` for jobs, `compute` for live activations, `read` for reads
when `public_reads` is off, `admin` for other users' jobs. Tokens (lm_saes.auth) are compared
in constant time and never logged. Each dependency returns the caller's `Principal`; an
anonymous reader (public reads) is `ANONYMOUS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import ApiProblem
from gateway.settings import GatewaySettings, Scope
from lm_saes.auth import Principal

bearer = HTTPBearer(auto_error=False, description="API token from LM_SAES_API_TOKENS")
ANONYMOUS = Principal("anonymous", frozenset({"read"}))


def require(scope: Scope, identified: bool = False) -> Callable[..., Principal]:
    """A dependency that lets the request through only with a token holding `scope`;
    `identified`: a token is needed even when reads are public (the answer depends on who asks)."""

    def check(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
    ) -> Principal:
        settings: GatewaySettings = request.app.state.settings
        if credentials is None and scope == "read" and settings.public_reads and not identified:
            return ANONYMOUS
        challenge = f'Bearer realm="lm-saes", scope="{scope}"'
        principal = settings.api_tokens.lookup(credentials.credentials) if credentials else None
        if principal is None:
            detail = "unknown bearer token" if credentials else "a bearer token is required"
            raise ApiProblem(401, detail, headers={"WWW-Authenticate": challenge})
        if not principal.has(scope):
            raise ApiProblem(
                403,
                f"this token lacks the {scope!r} scope",
                headers={"WWW-Authenticate": f'{challenge}, error="insufficient_scope"'},
            )
        return principal

    check.scope = scope  # type: ignore[attr-defined]  # read by app.py's OpenAPI post-processing
    check.identified = identified  # type: ignore[attr-defined]
    return check


read = Depends(require("read"))
compute = Depends(require("compute"))
submit = Depends(require("submit"))
Reader = Annotated[Principal, Depends(require("read"))]
IdentifiedReader = Annotated[Principal, Depends(require("read", identified=True))]
Computer = Annotated[Principal, Depends(require("compute"))]
Submitter = Annotated[Principal, Depends(require("submit"))]
