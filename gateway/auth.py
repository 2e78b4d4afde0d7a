"""Bearer-token scopes: `submit` for jobs, `compute` for live activations, `read` for reads
when `public_reads` is off. Tokens are compared in constant time and never logged."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from gateway.errors import ApiProblem
from gateway.settings import GatewaySettings, Scope

bearer = HTTPBearer(auto_error=False, description="API token from LM_SAES_API_TOKENS")


def scopes_of(token: str, tokens: dict[str, list[Scope]]) -> set[str] | None:
    """The scopes of `token`, or None when unknown; every configured token is compared, so the
    time taken does not reveal which (or how much of one) matched."""
    found: set[str] | None = None
    given = token.encode()
    for known, scopes in tokens.items():
        if hmac.compare_digest(given, known.encode()):
            found = set(scopes)
    return found


def require(scope: Scope) -> Callable[..., None]:
    """A dependency that lets the request through only with a token holding `scope`."""

    def check(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        settings: GatewaySettings = request.app.state.settings
        if scope == "read" and settings.public_reads:
            return
        challenge = f'Bearer realm="lm-saes", scope="{scope}"'
        scopes = scopes_of(credentials.credentials, settings.api_tokens) if credentials else None
        if scopes is None:
            detail = "unknown bearer token" if credentials else "a bearer token is required"
            raise ApiProblem(401, detail, headers={"WWW-Authenticate": challenge})
        if scope not in scopes:
            raise ApiProblem(403, f"this token lacks the {scope!r} scope",
                             headers={"WWW-Authenticate": f'{challenge}, error="insufficient_scope"'})

    return check


read = Depends(require("read"))
compute = Depends(require("compute"))
submit = Depends(require("submit"))
