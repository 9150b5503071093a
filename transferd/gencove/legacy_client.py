"""An aiohttp client for Gencove's legacy REST API (`https://rest.gencove.com`): projects/samples and, before it,
apps/members. Both generations have the same shapes under different names, described by a `Generation`.

Auth, as the legacy Gencove CLI implemented it (gncv/gencove-cli, `gencove/client.py` of the rest.gencove.com era:
`login`, `_get_jwt`, `_auth_header`, `_auth_req`) and as the legacy docs describe it (docs.gencove.com/main,
"Authentication"; docs.gencove.com/api, "GET /welcome-api-key"):

* email + password: `POST /login {"email", "password", "device_uuid"}` -> `{"refresh_token"}`, then
  `POST /auth {"refresh_token"}` -> `{"access_token"}` (a JWT). Every authorised call sends
  `Authorization: JWT <access token>`; a 401 gets a new access token once (logging in again if the refresh token
  was refused) and repeats the call.
* an API key: `Authorization: GENCOVE-API-KEY <key>` (that client's fallback when not logged in, and what the docs
  show). It is checked once with `GET /welcome-api-key`, so a wrong key fails with a message saying so. Neither
  source documents trading an API key for a JWT, so we do not invent such a call.

Every request goes through the retry policy (`transferd.retry`); latency and outcome land in `STATS.observe_api`;
every token and password is registered with the log redactor. As in the v2 client, bodies are capped at
`MAX_BODY` and ids are quoted as single path segments (the legacy API has no paginated listing).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from transferd import __version__
from transferd.errors import TransferdError
from transferd.gencove.client import MAX_BODY, api_base, read_body, segment
from transferd.log import register_secret
from transferd.retry import DEFAULT_POLICY, ApiError, Policy, call
from transferd.stats import STATS

LEGACY_HOST = "https://rest.gencove.com"
ORDERS_BATCH = 200  # sample ids per bulk status request (the API states no limit; keep bodies small)


@dataclass(frozen=True, slots=True)
class Generation:
    """The names one API generation uses: `/projects/<id>/samples` or `/apps/<id>/members`."""

    api: str  # the config's `api` value
    groups: str  # "projects" | "apps"
    group: str  # "project" | "app"
    members: str  # "samples" | "members"
    member: str  # "sample" | "member"
    bulk_orders: bool  # whether POST /<groups>/<id>/<members>/orders exists
    traits: bool  # whether raw-data carries trait_values / trait_descriptions

    @property
    def member_id(self) -> str:
        return f"{self.member}_id"

    @property
    def group_id(self) -> str:
        return f"{self.group}_id"

    @property
    def ids_key(self) -> str:
        return f"{self.member}_ids"


PROJECTS = Generation("legacy-projects", "projects", "project", "samples", "sample", bulk_orders=True, traits=True)
APPS = Generation("legacy-apps", "apps", "app", "members", "member", bulk_orders=False, traits=False)
GENERATIONS = {g.api: g for g in (PROJECTS, APPS)}


class LegacyAuthError(TransferdError):
    """The legacy API refused our credentials; the message says which and where."""


@dataclass(frozen=True, slots=True)
class LegacyCredential:
    """An API key, or an email and password (for the JWT flow). Never printed."""

    api_key: str | None = field(default=None, repr=False)
    email: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, secret: str) -> LegacyCredential:
        """A key file holds either the API key itself or `{"email": "...", "password": "..."}` (JSON)."""
        text = secret.strip()
        if not text.startswith("{"):
            return cls(api_key=text)
        try:
            doc = json.loads(text)
        except ValueError:
            raise ValueError("the legacy credential looks like JSON but does not parse") from None
        doc = doc if isinstance(doc, dict) else {}
        email, password = doc.get("email"), doc.get("password")
        if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
            raise ValueError('a legacy credential in JSON must be {"email": "...", "password": "..."}')
        register_secret(password)
        return cls(email=email, password=password)


@dataclass(frozen=True, slots=True)
class RawData:
    """A raw-data answer: one row per sample/member, and (projects only) what the trait keys mean."""

    rows: tuple[dict[str, Any], ...]
    trait_descriptions: dict[str, Any]


class LegacyClient:
    def __init__(
        self,
        host: str,
        credential: LegacyCredential,
        *,
        timeout: float = 120.0,
        policy: Policy = DEFAULT_POLICY,
        max_body: int = MAX_BODY,
    ) -> None:
        self.base = api_base(host or LEGACY_HOST)
        self.policy = policy
        self.max_body = max_body
        self._cred = credential
        if credential.api_key:
            register_secret(credential.api_key)
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=30)
        self._session: aiohttp.ClientSession | None = None
        self._device = str(uuid.uuid4())
        self._refresh: str | None = None
        self._access: str | None = None
        self._key_checked = False
        self._auth_lock = asyncio.Lock()

    async def __aenter__(self) -> LegacyClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"Content-Type": "application/json", "User-Agent": f"transferd/{__version__}"},
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- transport ---------------------------------------------------------------------------------------------
    async def _once(self, method: str, path: str, operation: str, body: Any, authorization: str | None) -> Any:
        assert self._session is not None, "use LegacyClient as an async context manager"
        headers = {"Authorization": authorization} if authorization else {}
        started, outcome = time.monotonic(), "error"
        try:
            async with self._session.request(method, self.base + path, json=body, headers=headers) as resp:
                raw = await read_body(resp, self.max_body)
                outcome = str(resp.status)
                doc: Any = None
                if raw:
                    try:
                        doc = json.loads(raw)
                    except ValueError:
                        doc = raw.decode(errors="replace")[:500]
                if resp.status >= 400:
                    retry_after = resp.headers.get("Retry-After")
                    wait = float(retry_after) if retry_after is not None and _number(retry_after) else None
                    raise ApiError(resp.status, operation, doc, wait)
                return doc
        finally:
            STATS.observe_api(operation, time.monotonic() - started, outcome)

    async def _call(self, method: str, path: str, operation: str, body: Any, authorization: str | None) -> Any:
        return await call(
            f"api.{operation}", lambda: self._once(method, path, operation, body, authorization), self.policy
        )

    async def request(self, method: str, path: str, operation: str, body: Any = None) -> Any:
        """An authorised call; a 401 on a JWT renews it once and repeats the call."""
        header = await self._authorization()
        try:
            return await self._call(method, path, operation, body, header)
        except ApiError as e:
            if e.status != 401:
                raise
            if self._cred.api_key:
                raise LegacyAuthError(f"{self.base}: the API key was refused ({method} {path}: HTTP 401)") from None
        await self._renew(header)
        return await self._call(method, path, operation, body, await self._authorization())

    # -- auth ----------------------------------------------------------------------------------------------------
    async def _authorization(self) -> str:
        async with self._auth_lock:  # concurrent first calls wait for one check / one login
            if self._cred.api_key:
                if not self._key_checked:
                    await self.welcome()
                return f"GENCOVE-API-KEY {self._cred.api_key}"
            if self._access is None:
                await self._new_access_token()
            assert self._access is not None
            return f"JWT {self._access}"

    async def welcome(self) -> dict[str, Any]:
        """`GET /welcome-api-key`: proves the API key works (API-key credentials only)."""
        try:
            doc = await self._call(
                "GET", "/welcome-api-key", "legacy_welcome", None, f"GENCOVE-API-KEY {self._cred.api_key}"
            )
        except ApiError as e:
            if e.status in (401, 403):
                msg = f"{self.base}: the API key was refused (GET /welcome-api-key: HTTP {e.status})"
                raise LegacyAuthError(msg) from None
            raise
        self._key_checked = True
        return doc or {}

    async def _login(self) -> None:
        body = {"email": self._cred.email, "password": self._cred.password, "device_uuid": self._device}
        try:
            doc = await self._call("POST", "/login", "legacy_login", body, None)
        except ApiError as e:
            if 400 <= e.status < 500 and e.status != 429:
                raise LegacyAuthError(
                    f"{self.base}: login as {self._cred.email} refused (POST /login: HTTP {e.status})"
                ) from None
            raise
        self._refresh = _token(doc, "refresh_token", "/login")

    async def _new_access_token(self) -> None:
        """Access token from the refresh token, logging in first (or again, when it is refused)."""
        if self._refresh is None:
            await self._login()
        try:
            doc = await self._call("POST", "/auth", "legacy_auth", {"refresh_token": self._refresh}, None)
        except ApiError as e:
            if e.status not in (400, 401, 403):
                raise
            await self._login()  # the refresh token expired or was revoked
            doc = await self._call("POST", "/auth", "legacy_auth", {"refresh_token": self._refresh}, None)
        self._access = _token(doc, "access_token", "/auth")

    async def _renew(self, stale: str) -> None:
        async with self._auth_lock:
            if self._access is not None and f"JWT {self._access}" != stale:
                return  # a concurrent call renewed it already
            self._access = None
            await self._new_access_token()

    # -- the generations' endpoints ------------------------------------------------------------------------------
    async def members(self, gen: Generation, group_id: str) -> list[dict[str, Any]]:
        """`GET /projects/<id>/samples` (or `/apps/<id>/members`): every participating sample/member."""
        doc = await self.request("GET", f"/{gen.groups}/{segment(group_id)}/{gen.members}", f"legacy_{gen.members}")
        return list((doc or {}).get(gen.members) or [])

    async def order(self, gen: Generation, group_id: str, member_id: str) -> dict[str, Any]:
        path = f"/{gen.groups}/{segment(group_id)}/{gen.members}/{segment(member_id)}/order"
        doc = await self.request("GET", path, "legacy_order")
        return dict((doc or {}).get("order") or {})

    async def orders(self, gen: Generation, group_id: str, member_ids: Sequence[int]) -> list[dict[str, Any]]:
        """The bulk status call (projects/samples only), `ORDERS_BATCH` ids per request."""
        if not gen.bulk_orders:
            raise ValueError(f"{gen.api} has no bulk status endpoint")
        out: list[dict[str, Any]] = []
        path = f"/{gen.groups}/{segment(group_id)}/{gen.members}/orders"
        for i in range(0, len(member_ids), ORDERS_BATCH):
            body = {gen.ids_key: list(member_ids[i : i + ORDERS_BATCH])}
            doc = await self.request("POST", path, "legacy_orders", body)
            out += list((doc or {}).get("orders") or [])
        return out

    async def raw_data(
        self,
        gen: Generation,
        group_id: str,
        member_ids: Sequence[int] | None = None,
        external_ids: Sequence[str] | None = None,
    ) -> RawData:
        """Signed URLs per sample/member. No ids: all of them (an empty list means none)."""
        if member_ids is not None and external_ids is not None:
            raise ValueError("give member ids or external ids, not both")
        body: dict[str, Any] = {}
        if member_ids is not None:
            body[gen.ids_key] = list(member_ids)
        if external_ids is not None:
            body["external_ids"] = list(external_ids)
        doc = await self.request("POST", f"/{gen.groups}/{segment(group_id)}/raw-data", "legacy_raw_data", body)
        doc = doc or {}
        return RawData(tuple(doc.get("raw_data") or ()), dict(doc.get("trait_descriptions") or {}))


def _token(doc: Any, key: str, where: str) -> str:
    value = doc.get(key) if isinstance(doc, dict) else None
    if not isinstance(value, str) or not value:
        raise LegacyAuthError(f"{where} answered without a {key}")
    register_secret(value, rotating=True)
    return value


def _number(value: str | None) -> bool:
    try:
        return value is not None and float(value) >= 0
    except ValueError:
        return False
