"""Loading pydantic-settings classes from `LM_SAES_*` variables, for every process that has them
(services, gateway): a bad value exits naming the variable, with no traceback and no echo of
the value (it may be a secret)."""

from __future__ import annotations

from typing import TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings

S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S]) -> S:
    try:
        return cls()
    except ValidationError as error:
        problems = "; ".join(f"LM_SAES_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in error.errors())
        raise SystemExit(f"invalid settings: {problems}") from None
