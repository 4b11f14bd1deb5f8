"""Fuzzing every operation of the API with schemathesis, against the app's own OpenAPI
document: anonymously, as a device, a driver, a manager and an admin, then chains of calls
along the links schemathesis infers. Every schemathesis check runs on every answer: no 5xx;
status codes, content types, bodies and headers as documented; bad input refused (in the
error shape, which the document declares for every 4xx); good input accepted; 405 with the
right ``Allow``; credentials enforced. Said why below: ``positive_data_acceptance`` is
narrowed to the rules JSON Schema can state, and ``bearer_token_is_enforced`` does for the
bearer token what ``ignored_auth`` does for the device key (it passes OAuth2 schemes over).

The requests go to a real ``parkspot serve`` process (tests/live_server.py) on a database of
this module's own (rate limits off), with a little data made through the API first so that
path ids sometimes name an object that exists. The identities fuzz in turn on the same
server, in the order of the tests below: what one of them changes (a cancelled
reservation, a revoked device key) stays for the next.

Left out: ``GET /api/v1/availability/stream`` (server-sent events never end; tested in
tests/test_live_streams.py). The WebSocket routes are not in the OpenAPI document at all.
Generation is deterministic (fixed seeds, no example database), so a run sends the
requests the previous one sent. It runs in the PostgreSQL + Redis pass only (the backend
production runs on): fuzzing takes minutes, and CI has to stay under half an hour.
"""

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from schemathesis import Case, CheckContext, CheckFunction, Response
from schemathesis.errors import FailureGroup

from parkspot.app import create_app
from parkspot.config import Settings
from parkspot.models import Role
from tests.conftest import PASSWORD
from tests.live_server import (
    LiveServer,
    book,
    grant,
    make_driver,
    make_site,
    now,
    sign_in,
    sign_up,
    single_server,
)

pytestmark = pytest.mark.postgresql_pass

# Examples per operation and identity in the fuzzing phase; the examples and coverage
# phases (documented examples, boundary values and each kind of invalid input) come on top.
MAX_EXAMPLES = 20
# The same for the operations that need a token, sent without one.
ANONYMOUS_EXAMPLES = 5
SEED = 20_240_611
# Chains of calls: scenarios per run, calls per scenario at most, calls in all (runs with
# the next seed follow until they are made), and runs at most.
SCENARIOS = 20
STEPS = 8
CALLS = 400
RUNS = 40
STREAM = "/api/v1/availability/stream"
LOGOUT = "/api/v1/auth/logout"
BEARER: dict[str, list[str]] = {"OAuth2PasswordBearer": []}
# The device endpoints and the kind of device each takes a key of.
DEVICE_EVENTS = {
    "/api/v1/device/spot-events": "spot_sensor",
    "/api/v1/device/gate-events": "gate",
    "/api/v1/device/counter-events": "counter",
}
TIMEOUT = 30
# Validation errors of rules JSON Schema cannot state: a validator's own, and decimal places
# and digits (``multipleOf`` cannot say "at most 4 decimals" of a float).
RULES = frozenset(
    {"value_error", "decimal_max_places", "decimal_max_digits", "decimal_whole_digits"}
)


def openapi_document() -> dict[str, Any]:
    """The document the server serves at /openapi.json; building it touches no database."""
    document: dict[str, Any] = create_app(Settings(secret_key="fuzz" * 16)).openapi()
    return document


def token_only(document: dict[str, Any]) -> list[str]:
    """The operations that need the bearer token."""
    return [
        f"{method.upper()} {path}"
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [BEARER]
    ]


def config(document: dict[str, Any], *, anonymous: bool = False) -> schemathesis.Config:
    settings: dict[str, Any] = {
        "seed": SEED,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
    }
    if anonymous:
        # Without a token these are all 401s, whatever else is sent: a few suffice.
        settings["operations"] = [
            {
                "include-name": token_only(document),
                "generation": {"max-examples": ANONYMOUS_EXAMPLES},
                "phases": {"coverage": {"enabled": False}},
            }
        ]
    return schemathesis.Config.from_dict(settings)


def api(*, anonymous: bool = False) -> schemathesis.BaseSchema:
    document = openapi_document()
    schema = schemathesis.openapi.from_dict(document, config=config(document, anonymous=anonymous))
    return schema.exclude(path=STREAM)


ANONYMOUS = api(anonymous=True)
API = api()
DEVICES = API.include(path=list(DEVICE_EVENTS))
MANAGEMENT = API.include(tag=["lots", "devices", "operators", "alerts", "reservations"])
ADMINISTRATION = API.include(tag=["users", "operators"])


ApiCase = Case[Any]


@dataclass(frozen=True)
class Target:
    """The server under fuzzing, the credentials of each identity, and the operations whose
    token enforcement has been probed."""

    server: LiveServer
    usernames: dict[str, str]
    tokens: dict[str, str]
    device_keys: dict[str, str]
    probed: set[str] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="module")
async def target(
    template: str, tmp_path_factory: pytest.TempPathFactory, anyio_backend: str
) -> AsyncIterator[Target]:
    """One server with two lots (public and members-only) with spots, a device of each kind,
    a driver with a vehicle and a reservation, a manager and an admin."""
    async with single_server(template, tmp_path_factory.mktemp("fuzz")) as stack:
        http, database = stack.http, stack.database
        served = await http.get("/openapi.json")
        assert served.json() == openapi_document()
        site = await make_site(http, database, 3)
        await make_site(
            http,
            database,
            2,
            operator_id=site.operator_id,
            manager=site.manager,
            visibility="members",
        )
        driver = await make_driver(http)
        await book(http, driver, lot_id=site.lot_id, starts_at=now())
        admin = await sign_up(http, "fuzz-admin")
        await grant(database, admin.id, Role.admin)
        keys: dict[str, str] = {}
        for kind in DEVICE_EVENTS.values():
            response = await http.post(
                f"/api/v1/lots/{site.lot_id}/devices",
                json={"name": f"fuzz {kind}", "kind": kind},
                headers=site.manager.headers,
            )
            assert response.status_code == 201, response.text
            keys[kind] = response.json()["key"]
        accounts = {"driver": driver.account, "manager": site.manager, "admin": admin}
        yield Target(
            stack.server,
            usernames={name: account.username for name, account in accounts.items()},
            tokens={
                "driver": driver.account.token,
                "manager": site.manager.token,
                # Signed in again: the role is read at sign-in.
                "admin": await sign_in(http, admin.username),
            },
            device_keys=keys,
        )


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        # Straight to the loopback server, whatever proxy the environment names.
        http.trust_env = False
        yield http


def fresh_token(target: Target, session: requests.Session, identity: str) -> str:
    response = session.post(
        f"{target.base_url}/api/v1/auth/login",
        json={"username": target.usernames[identity], "password": PASSWORD},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def refuses_a_rule_the_schema_cannot_state(response: Response) -> bool:
    """A 400/422 for a rule JSON Schema has no words for: a service's own error code
    (``invalid_window``, ``idempotency_key_reused``, ``current_password_mismatch``...) or a
    validator's ``value_error`` (ends_at after starts_at, one of spot_id and lot_id, an IANA
    time zone, a deliverable e-mail domain, bbox corners in order...), or money with too
    many digits. Never a type, format, range, length, pattern, required or unknown-field
    error: the schema states those, so refusing schema-valid input for one of them is a
    bug of the document."""
    if (
        response.status_code not in (400, 422)
        or "json" not in response.headers.get("content-type", [""])[0]
    ):
        return False
    error = response.json()["error"]
    if error["code"] != "validation_error":
        return True
    return all(e["type"] in RULES for e in error["details"]["errors"])


def positive_data_acceptance(ctx: CheckContext, response: Response, case: ApiCase) -> bool | None:
    """schemathesis's check that schema-valid input is accepted, but for the rules above."""
    if refuses_a_rule_the_schema_cannot_state(response):
        return None
    result: bool | None = schemathesis.checks.positive_data_acceptance(ctx, response, case)
    return result


def credentials(
    case: ApiCase, target: Target, session: requests.Session, identity: str | None
) -> dict[str, str]:
    """The identity's credentials for the case, none when the case is about missing or
    wrong ones: the device endpoints get the key of a device of their kind, the others the
    identity's bearer token (a fresh one for logout, which ends the token it is called with)."""
    path = case.operation.path
    if identity is None or case.operation.schema.is_security_param_negated(case):
        return {}
    if path in DEVICE_EVENTS:
        if identity != "device":
            return {}
        return {"X-Device-Key": target.device_keys[DEVICE_EVENTS[path]]}
    if identity not in target.tokens:
        return {}
    token = target.tokens[identity]
    if path == LOGOUT:
        token = fresh_token(target, session, identity)
    return {"Authorization": f"Bearer {token}"}


def bearer_token_enforcement(target: Target, session: requests.Session) -> CheckFunction:
    """ignored_auth for the bearer token, which schemathesis's own check passes over (it
    only knows API key and HTTP schemes): a 2xx of an operation that requires the token
    (no empty requirement in its ``security``) was sent one, and the same request answers
    401 without it and with a token that is none; probed once per operation."""

    def bearer_token_is_enforced(ctx: CheckContext, response: Response, case: ApiCase) -> None:
        security = case.operation.definition.raw.get("security", [])
        if not 200 <= response.status_code < 300 or {} in security or BEARER not in security:
            return
        label = case.operation.label
        assert "Authorization" in response.request.headers, f"{label} answered without a token"
        if label in target.probed:
            return
        target.probed.add(label)
        for token, sent in ((None, "without a token"), ("Bearer not-a-token", "with a bad token")):
            probe = response.request.copy()
            del probe.headers["Authorization"]
            if token is not None:
                probe.headers["Authorization"] = token
            status = session.send(probe, timeout=TIMEOUT).status_code
            assert status == 401, f"{label} answered {status} to a request {sent}"

    return bearer_token_is_enforced


def fuzz(case: ApiCase, target: Target, session: requests.Session, identity: str | None) -> None:
    """Sends the case with the identity's credentials and runs every check on the answer."""
    case.call_and_validate(
        base_url=target.base_url,
        session=session,
        headers=credentials(case, target, session, identity) or None,
        timeout=TIMEOUT,
        **checks(target, session),
    )


def checks(target: Target, session: requests.Session) -> dict[str, list[CheckFunction]]:
    """Every check schemathesis has, positive_data_acceptance in the version above, and
    the bearer token's enforcement."""
    return {
        "excluded_checks": [schemathesis.checks.positive_data_acceptance],
        "additional_checks": [
            positive_data_acceptance,
            bearer_token_enforcement(target, session),
        ],
    }


@ANONYMOUS.parametrize()
def test_anonymous_requests(case: ApiCase, target: Target, session: requests.Session) -> None:
    fuzz(case, target, session, None)


@DEVICES.parametrize()
def test_device_requests(case: ApiCase, target: Target, session: requests.Session) -> None:
    fuzz(case, target, session, "device")


@API.parametrize()
def test_driver_requests(case: ApiCase, target: Target, session: requests.Session) -> None:
    fuzz(case, target, session, "driver")


@MANAGEMENT.parametrize()
def test_manager_requests(case: ApiCase, target: Target, session: requests.Session) -> None:
    fuzz(case, target, session, "manager")


@ADMINISTRATION.parametrize()
def test_admin_requests(case: ApiCase, target: Target, session: requests.Session) -> None:
    fuzz(case, target, session, "admin")


def test_chains_of_calls_as_a_manager(target: Target, session: requests.Session) -> None:
    """Sequences of calls along the links schemathesis infers from the document (the id a
    POST /lots answers goes into GET, PATCH and DELETE /lots/{lot_id}...): the checks that
    need a history (use_after_free, ensure_resource_availability) get one here. As the
    manager, who may create nearly everything.

    The server keeps what each scenario did, so Hypothesis cannot replay a scenario and
    get the same answers: it gives up (``Flaky``) now and then, and shrinking or replaying
    a failure would not reproduce it. So failures are collected as they happen, and runs
    with the next seed follow until ``CALLS`` calls are made."""
    # A schema of its own: inferring the links adds them to the document.
    machine = api().exclude(path=LOGOUT).as_state_machine()
    calls = 0
    failures: list[str] = []

    class Workflow(machine):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: ApiCase) -> dict[str, Any]:
            headers = credentials(case, target, session, "manager")
            return {"base_url": target.base_url, "session": session, "headers": headers}

        def validate_response(
            self,
            response: Response,
            case: ApiCase,
            additional_checks: list[Any] | None = None,
            **kwargs: Any,
        ) -> None:
            nonlocal calls
            calls += 1
            try:
                case.validate_response(
                    response,
                    headers=kwargs["headers"],
                    transport_kwargs=kwargs,
                    recorder=self.recorder,
                    **checks(target, session),
                )
            except FailureGroup as exc:
                failures.append(str(exc))

    settings = hypothesis.settings(
        max_examples=SCENARIOS,
        stateful_step_count=STEPS,
        database=None,
        deadline=None,
        phases=[hypothesis.Phase.generate],
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    for run in range(RUNS):
        if calls >= CALLS:
            break
        with contextlib.suppress(hypothesis.errors.Flaky):
            hypothesis.seed(SEED + run)(Workflow).run(settings=settings)
    assert calls >= CALLS
    assert failures == []


def test_the_server_logged_no_error_and_token_enforcement_was_probed(target: Target) -> None:
    assert target.server.errors() == []
    assert {"GET /api/v1/vehicles", "POST /api/v1/lots", "GET /api/v1/users"} <= target.probed
