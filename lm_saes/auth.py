"""Bearer tokens and their scopes, shared by the gRPC services and the REST gateway.

A token table maps each secret token to a principal: a name (jobs record it as their owner)
and scopes. One format everywhere, JSON, from a file mounted from a Secret or an environment
variable:

    {"<token>": {"name": "alice", "scopes": ["read", "submit"]}}
    {"<token>": ["read", "compute"]}            # shorthand; the name is derived from the token

Scopes: `read` (jobs, SAEs, features, graphs), `compute` (live activations, interventions),
`submit` (queue and cancel one's own jobs), `admin` (see and cancel anyone's jobs), and
`service` (a trusted caller such as the gateway, which may act for the user it names in the
`x-lm-saes-user` metadata). Lookups compare against every token in constant time and tokens
never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

Scope = Literal["read", "compute", "submit", "admin", "service"]
SCOPES: tuple[str, ...] = get_args(Scope)
USER_METADATA = "x-lm-saes-user"  # the end user a `service` caller acts for
MAX_NAME = 64


@dataclass(frozen=True)
class Principal:
    """Who is calling: `name` owns the jobs it submits."""

    name: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def token_name(token: str) -> str:
    """A stable, non-secret name for a token given without one (a hash prefix)."""
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class TokenTable:
    """Token -> principal; `lookup` is constant-time over the whole table."""

    entries: tuple[tuple[bytes, Principal], ...] = field(default=(), repr=False)

    @classmethod
    def parse(cls, value: Any, source: str = "tokens") -> TokenTable:
        """From the decoded JSON (see the module docstring); errors name the entry, never the token."""
        if not isinstance(value, dict):
            raise ValueError(f"{source}: must be a JSON object mapping tokens to scopes")
        entries = []
        for number, (token, spec) in enumerate(value.items(), 1):
            where = f"{source}: entry {number}"
            if not isinstance(token, str) or len(token) < 8:
                raise ValueError(f"{where}: a token must be a string of at least 8 characters")
            if isinstance(spec, list):
                spec = {"scopes": spec}
            if not isinstance(spec, dict) or not isinstance(spec.get("scopes"), list):
                raise ValueError(f'{where}: give a list of scopes or {{"name": ..., "scopes": [...]}}')
            unknown = [s for s in spec["scopes"] if s not in SCOPES]
            if unknown:
                raise ValueError(f"{where}: unknown scopes {unknown[:5]}; known: {', '.join(SCOPES)}")
            name = spec.get("name") or token_name(token)
            if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
                raise ValueError(f"{where}: name must be a string of 1 to {MAX_NAME} characters")
            entries.append((token.encode(), Principal(name, frozenset(spec["scopes"]))))
        return cls(tuple(entries))

    @classmethod
    def load(cls, path: str | Path) -> TokenTable:
        path = Path(path)
        try:
            value = json.loads(path.read_text())
        except OSError as error:
            raise ValueError(f"tokens file {path}: cannot read it ({error.strerror})") from None
        except ValueError:
            raise ValueError(f"tokens file {path}: not valid JSON") from None
        return cls.parse(value, f"tokens file {path}")

    def lookup(self, token: str) -> Principal | None:
        """The principal of `token`, or None; every entry is compared, so the time taken does not
        reveal which (or how much of one) matched."""
        given = token.encode()
        found = None
        for known, principal in self.entries:
            if hmac.compare_digest(given, known):
                found = principal
        return found

    def __len__(self) -> int:
        return len(self.entries)

    def __bool__(self) -> bool:
        return bool(self.entries)
