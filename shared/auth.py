"""Authentication: POS API keys, member bearer tokens (JWT) and the admin credential.

- POS: ``X-API-Key``; the key is random (256 bits) and stored only as its SHA-256, which
  is enough for a high-entropy secret (no password-style slow hash needed).
- Member: ``Authorization: Bearer <JWT>`` signed with the platform's secret; a member
  reads only their own data.
- Admin: ``Authorization: Bearer <admin token>``, a separate credential.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from uuid import UUID

import jwt
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import Forbidden, Unauthorized
from shared.settings import ServiceSettings

TOKEN_AUDIENCE = "green-points-member"
_ALGORITHM = "HS256"

bearer_scheme = HTTPBearer(auto_error=False, description="Member token (JWT) or admin token")
pos_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The POS API key of one merchant"
)


def generate_api_key() -> str:
    return "pos_" + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_member_token(
    settings: ServiceSettings, member_id: UUID, *, now: datetime | None = None
) -> str:
    issued = now or datetime.now(UTC)
    claims = {
        "sub": str(member_id),
        "aud": TOKEN_AUDIENCE,
        "iat": int(issued.timestamp()),
        "exp": int((issued + timedelta(days=settings.member_token_ttl_days)).timestamp()),
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=_ALGORITHM)


def member_id_from_token(settings: ServiceSettings, token: str) -> UUID:
    try:
        claims = jwt.decode(
            token, settings.jwt_secret, algorithms=[_ALGORITHM], audience=TOKEN_AUDIENCE
        )
        return UUID(claims["sub"])
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("the member token has expired; sign in again") from exc
    except (jwt.InvalidTokenError, KeyError, ValueError) as exc:
        raise Unauthorized("the bearer token is not a valid member or admin token") from exc


@dataclass(frozen=True)
class Principal:
    kind: Literal["admin", "member"]
    member_id: UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    def ensure_can_read(self, member_id: UUID) -> None:
        """A member sees only their own data; the admin sees everyone's."""
        if not self.is_admin and self.member_id != member_id:
            raise Forbidden("a member token can only read its own member's data")


def _settings(request: Request) -> ServiceSettings:
    settings: ServiceSettings = request.app.state.settings
    return settings


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("send 'Authorization: Bearer <token>' (a member or admin token)")
    settings = _settings(request)
    if hmac.compare_digest(credentials.credentials.encode(), settings.admin_token.encode()):
        return Principal("admin")
    return Principal("member", member_id_from_token(settings, credentials.credentials))


def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this operation needs the admin credential")
    return principal


def get_member(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.is_admin or principal.member_id is None:
        raise Forbidden("this operation is done by a member with their own member token")
    return principal


def get_pos_key(key: Annotated[str | None, Depends(pos_key_scheme)]) -> str:
    if not key:
        raise Unauthorized("send the merchant's POS API key in the X-API-Key header")
    return key


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(get_admin)]
MemberDep = Annotated[Principal, Depends(get_member)]
PosKeyDep = Annotated[str, Depends(get_pos_key)]
