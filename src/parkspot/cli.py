"""The ``parkspot`` command line: serve, migrate, create-admin, seed-demo and simulate."""

import argparse
import asyncio
import getpass
import math
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from alembic.util.exc import CommandError as AlembicCommandError
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from parkspot import demo, simulator
from parkspot.app import build_state
from parkspot.auth import repository as auth_repository
from parkspot.auth.schemas import UserCreate
from parkspot.config import Settings, get_settings
from parkspot.db.migrations import upgrade
from parkspot.logs import log_config
from parkspot.models import Role, User
from parkspot.state import AppState

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

APP_FACTORY = "parkspot.app:create_app"


class CommandError(Exception):
    """A failure the user can act on: printed as one message, no traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        settings = get_settings()
    except ValidationError as exc:
        _err(f"parkspot: invalid configuration\n{_describe(exc)}")
        return EXIT_USAGE
    try:
        return handler(args, settings)
    except CommandError as exc:
        _err(f"parkspot {args.command}: {exc.message}")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted")
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parkspot",
        description="Real-time parking availability and reservation server.",
        epilog="Settings come from PARKSPOT_* environment variables (see the README).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the HTTP server (uvicorn)")
    serve.add_argument("--host", help="interface to bind (default: PARKSPOT_HOST, 127.0.0.1)")
    serve.add_argument(
        "--port", type=_port, help="TCP port (default: PARKSPOT_PORT, 8000)", default=None
    )
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="worker processes (more than one needs PARKSPOT_REDIS_URL)",
    )
    serve.set_defaults(handler=_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database schema (Alembic)")
    migrate.add_argument("--revision", default="head", help="target revision (default: head)")
    migrate.set_defaults(handler=_migrate)

    admin = commands.add_parser(
        "create-admin",
        help="create an administrator account",
        description="Create an administrator. Anything omitted is asked for on a terminal; "
        "without one, every value must be given.",
    )
    admin.add_argument("--username")
    admin.add_argument("--email")
    secret = admin.add_mutually_exclusive_group()
    secret.add_argument(
        "--password", help="visible to other local users in the process list; prefer a prompt"
    )
    secret.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input",
    )
    admin.set_defaults(handler=_create_admin)

    seed = commands.add_parser(
        "seed-demo",
        help="add demo lots and accounts (idempotent)",
        description=f"Add a demo operator with lots around {demo.CITY}, a driver and a "
        "manager account. Passwords are printed once, when the accounts are created; "
        "later runs change nothing.",
    )
    seed.set_defaults(handler=_seed_demo)

    _add_simulate(commands)
    return parser


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError("must be between 1 and 65535")
    return number


# --- serve ---------------------------------------------------------------------------------

GRACEFUL_SHUTDOWN_SECONDS = 5


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.workers > 1 and not settings.redis_url:
        raise CommandError(
            f"--workers {args.workers} needs PARKSPOT_REDIS_URL. Without Redis the "
            "availability cache and event bus live inside one process, so several workers "
            "would disagree. Run one worker, or set PARKSPOT_REDIS_URL.",
            EXIT_USAGE,
        )
    host: str = args.host or settings.host
    port: int = args.port or settings.port
    # Make the development secret here, once, rather than in racing worker processes.
    settings.effective_secret_key()
    shown = f"[{host}]" if ":" in host else host
    _say(f"parkspot: serving on http://{shown}:{port} (API docs: http://{shown}:{port}/docs)")
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        # JSON lines in production (PARKSPOT_LOG_FORMAT), for every logger.
        log_config=log_config(settings),
        # Event streams never end on their own: on shutdown they are cut after this.
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        # uvicorn would believe X-Forwarded-For from 127.0.0.1; the app believes only
        # PARKSPOT_TRUSTED_PROXIES.
        proxy_headers=False,
    )
    return EXIT_OK


# --- migrate -------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.effective_database_url
    _make_sqlite_folder(url)
    try:
        upgrade(url, args.revision)
    except AlembicCommandError as exc:
        raise CommandError(str(exc)) from exc
    except (SQLAlchemyError, OSError) as exc:
        raise CommandError(_database_problem(url, exc)) from exc
    _say(f"Database {_redacted(url)} is at revision {args.revision}.")
    return EXIT_OK


def _make_sqlite_folder(url: str) -> None:
    """Alembic opens its own engine, which (unlike ours) does not create the file's folder."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(str(parsed.database)).parent.mkdir(parents=True, exist_ok=True)


# --- create-admin --------------------------------------------------------------------------


def _create_admin(args: argparse.Namespace, settings: Settings) -> int:
    username = args.username if args.username is not None else _ask("Username", "--username")
    email = args.email if args.email is not None else _ask("E-mail", "--email")
    password = _read_password(args)
    try:
        data = UserCreate.model_validate(
            {"username": username, "email": email, "password": password}
        )
    except ValidationError as exc:
        raise CommandError("invalid values\n" + _describe(exc), EXIT_USAGE) from exc
    user_id = _run(settings, _insert_admin(settings, data))
    _say(f"Created administrator {data.username} <{data.email}> (id {user_id}).")
    return EXIT_OK


def _ask(label: str, flag: str) -> str:
    if not sys.stdin.isatty():
        raise CommandError(f"{flag} is required when not running on a terminal", EXIT_USAGE)
    return input(f"{label}: ").strip()


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.password is not None:
        password: str = args.password
        return password
    if not sys.stdin.isatty():
        raise CommandError(
            "--password or --password-stdin is required when not running on a terminal",
            EXIT_USAGE,
        )
    first = getpass.getpass("Password (at least 8 characters): ")
    if first != getpass.getpass("Password again: "):
        raise CommandError("the two passwords differ", EXIT_USAGE)
    return first


async def _insert_admin(settings: Settings, data: UserCreate) -> int:
    async with _app_state(settings) as state:
        password_hash = await state.passwords.hash(data.password)
        try:
            async with state.database.transaction() as session:
                taken = await auth_repository.username_or_email_taken(
                    session, data.username, data.email
                )
                if taken is not None:
                    value = data.username if taken == "username" else data.email
                    raise CommandError(f"the {taken} {value!r} is already registered")
                user = User(
                    username=data.username,
                    email=data.email,
                    password_hash=password_hash,
                    role=Role.admin,
                )
                session.add(user)
                await session.flush()
                assert user.id is not None
                return user.id
        except IntegrityError as exc:
            # Lost a race with another sign-up using the same name.
            raise CommandError("that username or e-mail is already registered") from exc


# --- seed-demo -----------------------------------------------------------------------------


def _seed_demo(_: argparse.Namespace, settings: Settings) -> int:
    result = _run(settings, _seed(settings))
    if not result.created:
        _say(
            f'Demo data already present: operator "{demo.OPERATOR_NAME}" (id '
            f"{result.operator_id}) with {result.lots} lots and {result.spots} spots. "
            "Nothing changed; passwords are only shown when the accounts are created."
        )
        return EXIT_OK
    lines = [
        f'Seeded operator "{demo.OPERATOR_NAME}" (id {result.operator_id}): {result.lots} lots, '
        f"{result.spots} spots around {demo.CITY}.",
        f"Member sign-up passkey: {result.passkey}",
        "Demo accounts (shown this once, keep them):",
    ]
    lines += [
        f"  {c.role.value:<8} username {c.username:<14} password {c.password}"
        for c in result.credentials
    ]
    _say("\n".join(lines))
    return EXIT_OK


async def _seed(settings: Settings) -> demo.SeedResult:
    async with _app_state(settings) as state:
        try:
            return await demo.seed(state.database, state.passwords)
        except demo.DemoConflict as exc:
            raise CommandError(str(exc)) from exc
        except IntegrityError as exc:
            raise CommandError(
                "the demo data clashes with existing rows (is another seed-demo running?)"
            ) from exc


# --- simulate ------------------------------------------------------------------------------

SIMULATE_URL = "http://127.0.0.1:8000"
MAX_RATE = 1000.0
MAX_DRIVERS = 500
MAX_TIME_SCALE = 86400.0


def _add_simulate(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    simulate = commands.add_parser(
        "simulate",
        help="drive realistic traffic against a running server",
        description="Drive traffic against a running parkspot server through its public API "
        "only: drivers book and cancel, cars come and go through a gate, a spot sensor "
        "reports them, apps read the map. The manager (by default the demo manager of "
        "seed-demo) gets a sensor and a gate on each of their lots; drivers are signed up "
        "anew for each run. The exit status is 1 when a request failed (a 5xx answer, an "
        "unexpected 4xx or a transport error).",
    )
    simulate.add_argument(
        "--url", type=_http_url, default=SIMULATE_URL, help=f"the server (default: {SIMULATE_URL})"
    )
    simulate.add_argument(
        "--duration",
        type=_duration,
        default=60.0,
        metavar="SECONDS",
        help="how long to run (default: 60; 0: until Ctrl-C)",
    )
    simulate.add_argument(
        "--rate",
        type=_rate,
        default=5.0,
        metavar="N",
        help="actions started per second (default: 5)",
    )
    simulate.add_argument(
        "--drivers",
        type=_driver_count,
        default=20,
        metavar="N",
        help="drivers to sign up, each with a car (default: 20)",
    )
    simulate.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of the random choices, to repeat a run's sequence",
    )
    simulate.add_argument(
        "--time-scale",
        type=_time_scale,
        default=1.0,
        metavar="FACTOR",
        help="simulated seconds per real second for the time of day, which shapes arrivals "
        "and departures (default: 1; 1440: a day in a minute)",
    )
    simulate.add_argument(
        "--start-hour",
        type=_hour,
        metavar="HOUR",
        help="simulated hour of the day at the start, 0 to 24 (default: the time now at the lots)",
    )
    simulate.add_argument(
        "--lot",
        type=_positive,
        action="append",
        dest="lots",
        metavar="LOT_ID",
        help="only this lot (repeatable; default: every lot the manager manages)",
    )
    simulate.add_argument(
        "--manager-username",
        default=demo.MANAGER.username,
        metavar="USERNAME",
        help=f"a manager of the lots (default: {demo.MANAGER.username})",
    )
    secret = simulate.add_mutually_exclusive_group()
    secret.add_argument(
        "--manager-password",
        metavar="PASSWORD",
        help="the manager's password (asked for on a terminal when omitted)",
    )
    secret.add_argument(
        "--manager-password-stdin",
        action="store_true",
        help="read the manager's password from the first line of standard input",
    )
    simulate.set_defaults(handler=_simulate)


def _number(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"not a finite number: {value!r}")
    return number


def _rate(value: str) -> float:
    number = _number(value)
    if not 0 < number <= MAX_RATE:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_RATE:g}")
    return number


def _duration(value: str) -> float:
    number = _number(value)
    if number < 0:
        raise argparse.ArgumentTypeError("must be 0 (until Ctrl-C) or more")
    return number


def _driver_count(value: str) -> int:
    number = _positive(value)
    if number > MAX_DRIVERS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_DRIVERS}")
    return number


def _time_scale(value: str) -> float:
    number = _number(value)
    if not 0 < number <= MAX_TIME_SCALE:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIME_SCALE:g}")
    return number


def _hour(value: str) -> float:
    number = _number(value)
    if not 0 <= number < 24:
        raise argparse.ArgumentTypeError("must be at least 0 and less than 24")
    return number


def _http_url(value: str) -> str:
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise argparse.ArgumentTypeError(f"not an http:// or https:// URL: {value!r}")
    return value.rstrip("/")


def _simulate(args: argparse.Namespace, _: Settings) -> int:
    options = simulator.Options(
        url=args.url,
        manager_username=args.manager_username,
        manager_password=_manager_password(args),
        duration=args.duration,
        rate=args.rate,
        drivers=args.drivers,
        seed=args.seed,
        time_scale=args.time_scale,
        start_hour=args.start_hour,
        lot_ids=tuple(args.lots or ()),
    )
    try:
        tally = asyncio.run(simulator.simulate(options, simulator.Progress(sys.stdout)))
    except simulator.SetupError as exc:
        raise CommandError(str(exc)) from exc
    return EXIT_FAILED if tally.errors else EXIT_OK


def _manager_password(args: argparse.Namespace) -> str:
    if args.manager_password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if args.manager_password is not None:
        password: str = args.manager_password
        return password
    if not sys.stdin.isatty():
        raise CommandError(
            "--manager-password or --manager-password-stdin is required when not running on "
            "a terminal",
            EXIT_USAGE,
        )
    return getpass.getpass(f"Password of {args.manager_username}: ")


# --- shared --------------------------------------------------------------------------------


@asynccontextmanager
async def _app_state(settings: Settings) -> AsyncIterator[AppState]:
    """The same state the app's lifespan builds, closed when the command is done."""
    state = build_state(settings)
    try:
        yield state
    finally:
        await state.availability.bus.close()
        await state.database.dispose()


def _run(settings: Settings, work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except (SQLAlchemyError, OSError) as exc:
        raise CommandError(_database_problem(settings.effective_database_url, exc)) from exc


def _database_problem(url: str, exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return (
        f"cannot use the database {_redacted(url)}: {cause}\n"
        "Is it running, and has `parkspot migrate` been run?"
    )


def _redacted(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _describe(exc: ValidationError) -> str:
    return "\n".join(
        f"  {'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors()
    )


def _say(message: str) -> None:
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _err(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()
