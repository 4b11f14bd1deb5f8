"""Account rules: registration, login, logout and profile changes."""

import secrets
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from parkspot.auth import repository
from parkspot.auth.schemas import TokenRead, UserCreate, UserRead, UserUpdate
from parkspot.db.types import utcnow
from parkspot.db.unique import add_unique
from parkspot.errors import BadRequest, Conflict, Unauthorized
from parkspot.models import AuthSession, MembershipRole, OperatorMember, User
from parkspot.operators import repository as operator_repository
from parkspot.state import AppState


def _taken(field: str) -> Conflict:
    return Conflict(
        f"That {field} is already registered", code=f"{field}_taken", details={"field": field}
    )


async def to_reads(session: AsyncSession, users: Sequence[User]) -> list[UserRead]:
    """The users with the operators they belong to, read in one query."""
    ids = [u.id for u in users if u.id is not None]
    operators = await operator_repository.operator_ids_by_user(session, ids)
    reads = []
    for user in users:
        assert user.id is not None
        reads.append(
            UserRead.model_validate({**user.model_dump(), "operator_ids": operators[user.id]})
        )
    return reads


async def to_read(session: AsyncSession, user: User) -> UserRead:
    return (await to_reads(session, [user]))[0]


async def register(
    session: AsyncSession, state: AppState, data: UserCreate, *, address: str
) -> UserRead:
    """Raises TooManyRequests (too many sign-ups from ``address``), Conflict
    (username/email taken) or BadRequest (unknown passkey)."""
    await state.attempts.register(address)
    # Hashed before the first statement: on SQLite that statement takes the database's write
    # lock, which must not be held through a hash.
    password_hash = await state.passwords.hash(data.password)
    taken = await repository.username_or_email_taken(session, data.username, data.email)
    if taken is not None:
        raise _taken(taken)
    operator = None
    if data.passkey is not None:
        operator = await operator_repository.get_by_passkey(session, data.passkey)
        if operator is None:
            raise BadRequest("The operator passkey is not valid", code="invalid_passkey")
    user = User(
        username=data.username,
        email=data.email,
        password_hash=password_hash,
        full_name=data.full_name,
        phone=data.phone,
    )
    # The check above can race with a concurrent registration; the constraint decides.
    taken = await add_unique(session, user, ("email", "username"))
    if taken is not None:
        raise _taken(taken)
    if operator is not None:
        assert operator.id is not None
        assert user.id is not None
        session.add(
            OperatorMember(operator_id=operator.id, user_id=user.id, role=MembershipRole.member)
        )
        await session.flush()
    return await to_read(session, user)


async def login(
    session: AsyncSession, state: AppState, login: str, password: str, *, address: str
) -> TokenRead:
    """Unknown users cost one hash too, so timing does not reveal which usernames exist.
    Too many attempts for the account or from ``address`` raise TooManyRequests before any
    query or hash."""
    await state.attempts.login(address, login)
    # Read in a transaction of its own: the request's write transaction would hold SQLite's
    # write lock through the hash. PostgreSQL text cannot hold NUL, so such a login names
    # nobody (and must not reach SQL).
    user = None
    if "\x00" not in login:
        async with state.database.session(write=False) as reader:
            user = await repository.get_user_by_login(reader, login)
    ok = await state.passwords.verify(password, user.password_hash if user else None)
    if user is None or not ok:
        raise Unauthorized("Wrong username or password", code="invalid_credentials")
    if not user.is_active:
        raise Unauthorized("This account is deactivated", code="account_inactive")
    assert user.id is not None
    now = utcnow()
    jti = secrets.token_urlsafe(24)
    await repository.add_session(
        session,
        AuthSession(jti=jti, user_id=user.id, created_at=now, expires_at=now + state.tokens.ttl),
    )
    return TokenRead(
        access_token=state.tokens.encode(user.id, jti, now),
        expires_in=int(state.tokens.ttl.total_seconds()),
    )


async def logout(session: AsyncSession, state: AppState, token: str) -> None:
    claims = state.tokens.decode(token)
    if claims is not None:
        await repository.revoke_session(session, claims.jti, utcnow())


async def update_profile(
    session: AsyncSession, state: AppState, user: User, data: UserUpdate
) -> UserRead:
    """A new password needs the current one; raises Conflict when the e-mail is taken."""
    assert user.id is not None
    if data.email is not None and data.email != user.email:
        if await repository.email_taken_by_other(session, data.email, user.id):
            raise _taken("email")
        user.email = data.email
    if data.password is not None:
        if data.current_password is None or not await state.passwords.verify(
            data.current_password, user.password_hash
        ):
            raise BadRequest(
                "current_password is required and must match to change the password",
                code="current_password_mismatch",
            )
        user.password_hash = await state.passwords.hash(data.password)
    fields = data.model_dump(exclude_unset=True, include={"full_name", "phone"})
    for name, value in fields.items():
        setattr(user, name, value)
    user.updated_at = utcnow()
    # The check above can lose a race; the unique constraints decide.
    taken = await add_unique(session, user, ("email", "username"))
    if taken is not None:
        raise _taken(taken)
    return await to_read(session, user)
