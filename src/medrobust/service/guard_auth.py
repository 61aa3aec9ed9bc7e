"""Who is asking the guard server: a tenant of the service's token store, or, with ``--no-auth``
(loopback only), the client's address.

The key it returns is also the query-attack watch's client: a tenant's queries share one history
whichever of its tokens sent them; without tokens, each address has its own.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from fastapi import HTTPException, Request

from medrobust.service.store import Store

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``.

    >>> [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "192.168.1.4", "example.org")]
    [True, True, True, False, False, False]
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def check_auth_choice(host: str, data_dir: Path | None, no_auth: bool) -> None:
    """Refuse a server that would answer without tokens where others can reach it, or that was
    given no way to authorise requests.

    Raises:
        ValueError: one sentence naming the options and the fix.
    """
    if data_dir is not None and no_auth:
        raise ValueError("give either --data-dir DIR (requests need a token from DIR's store) or --no-auth, not both")
    if data_dir is None and not no_auth:
        raise ValueError("the guard server needs --data-dir DIR (the service's data directory: requests then need "
                         "'Authorization: Bearer TOKEN', made with medrobust tokens create --data-dir DIR --tenant "
                         "NAME) or --no-auth (no tokens; only on a loopback --host such as 127.0.0.1)")
    if no_auth and not is_loopback(host):
        raise ValueError(f"--no-auth is refused on --host {host}: that address may be reachable from other machines, "
                         "and every request would be answered without a token; listen on 127.0.0.1, or give "
                         "--data-dir DIR to require tokens")


class GuardAuth:
    """Authorises requests: by the token store of ``data_dir``, or by nobody (``None``: loopback only)."""

    def __init__(self, data_dir: Path | None) -> None:
        self.store = Store(data_dir) if data_dir is not None else None

    def client(self, request: Request) -> str:
        """The requester's key: ``tenant:<name>``, or ``address:<ip>`` without tokens.

        Raises:
            HTTPException: 401 without a valid token.
        """
        if self.store is None:
            return f"address:{request.client.host if request.client else 'unknown'}"
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise HTTPException(401, "missing token: send the header 'Authorization: Bearer TOKEN' (an administrator "
                                     "creates tokens with: medrobust tokens create --data-dir DIR --tenant NAME)",
                                headers=_CHALLENGE)
        tenant = self.store.tenant_for_token(token.strip())
        if tenant is None:
            raise HTTPException(401, "token not recognised or revoked; ask your administrator for a new one",
                                headers=_CHALLENGE)
        return f"tenant:{tenant.name}"
