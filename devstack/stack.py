"""The local stack: moto, resources, mailbox, event pump and `chalice local`, together.

`python -m devstack` (what `make dev` runs) starts, in this order:

1. moto in server mode, in this process (its state is in memory only);
2. every resource the apps use (`devstack.resources.ensure_resources`);
3. `.vidline/local.env`, the environment the apps run with;
4. the mailbox, in this process because it reads moto's sent mail;
5. the CDN stand-in, serving the built front end and the signed media URLs
   (rebuilt when `frontend/` changes);
6. the event pump for the worker (`devstack.pump`), as a child process
   (restarted when the worker's code changes);
7. `chalice local` for the API (`devstack.api`), as a child process,
   restarted when the API's code (app.py, chalicelib/, .chalice/) changes.

It prints `Vidline local stack is ready` once everything answers, and stops
all of it on Ctrl-C or SIGTERM. A child that dies unasked is restarted after
a back-off; a child that cannot load its code waits for the code to change.
Children die with the stack even when it is killed (`devstack.processes`),
and a port still held by a leftover of a killed stack of this project is
freed on the next start (`devstack.leftovers`).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import logging
import os
import select
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from chalicelib.settings import Settings
from devstack.aws import LOCAL_CREDENTIALS, local_client
from devstack.jobs import PORT_ENV_FILE
from devstack.leftovers import PROJECT_MARK, STACK_PID_MARK, PortHolder, port_holders, stop_process_group
from devstack.logs import LOG_FILE
from devstack.processes import ChildProcess, describe_exit, say
from devstack.pump import DEFAULT_DLQ_HANDLER, DEFAULT_HANDLER

if TYPE_CHECKING:
    from moto.server import ThreadedMotoServer

    from devstack.cdn import CdnServer
    from devstack.mailbox import MailboxServer
    from devstack.s3front import S3Front

READY_LINE = "Vidline local stack is ready"
HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
ENV_FILE = Path(".vidline") / "local.env"
SITE_DIR = Path(".vidline") / "site"
# Where the pump notes the message of the job it runs, for its successor;
# one per stand-in port, so that stacks running side by side keep apart.
PUMP_IN_FLIGHT_FILE = Path(".vidline") / "pump-in-flight-{moto_port}.json"
API_START_TIMEOUT_S = 60.0
PUMP_START_TIMEOUT_S = 60.0
# SIGTERM to SIGKILL for the pump, which gives its jobs back to the queue first.
PUMP_STOP_GRACE_S = 15.0
# How often the stack looks at its children and the code.
SUPERVISE_TICK_S = 0.2
# Exit code of devstack.api and devstack.pump when the app's code cannot be
# loaded: restarting will not help until the code changes.
CANNOT_LOAD_EXIT = 2


class StackError(Exception):
    """The stack cannot start or keep running; the message says why, for people."""


class _Interrupted(Exception):
    """Asked to stop while starting."""


class StackPorts(BaseSettings):
    """Where the stack listens (all on 127.0.0.1); `VIDLINE_API_PORT` and so on."""

    model_config = SettingsConfigDict(env_prefix="VIDLINE_", extra="ignore", frozen=True)

    api_port: int = Field(default=8000, ge=1, le=65535)
    moto_port: int = Field(default=5000, ge=1, le=65535)
    mailbox_port: int = Field(default=8025, ge=1, le=65535)
    cdn_port: int = Field(default=8080, ge=1, le=65535)
    # The enforcing S3 front (devstack.s3front) that presigned URLs point at.
    s3_front_port: int = Field(default=9000, ge=1, le=65535)


# Settings of the stack itself, not of the apps: kept out of their environment.
_STACK_VARIABLES = frozenset(f"VIDLINE_{name.upper()}" for name in StackPorts.model_fields)
# Set from the stand-in's address (AWS_ENDPOINT_URL); a stray one would win.
_REPLACED_VARIABLES = frozenset({"VIDLINE_AWS_ENDPOINT_URL", "VIDLINE_S3_PUBLIC_ENDPOINT_URL"})


def app_environment(
    settings: Settings,
    endpoint_url: str,
    generated: Mapping[str, str],
    ports: StackPorts,
    user_env: Mapping[str, str],
) -> dict[str, str]:
    """The variables the API and the worker run with in local mode.

    Local-mode defaults, then every `VIDLINE_*` the user set, then what only
    the stack knows (the stand-in's address, dummy credentials, generated
    ids), which nothing overrides.
    """
    env = {
        "VIDLINE_STAGE": "local",
        "VIDLINE_AUTH_MODE": "app",
        "VIDLINE_AUTO_CONFIRM_SIGNUPS": "true",
        "VIDLINE_APP_URL": f"http://{HOST}:{ports.cdn_port}",
        "VIDLINE_MEDIA_BASE_URL": f"http://{HOST}:{ports.cdn_port}",
        # Log lines for people on the console, metrics as log lines (nothing
        # reads EMF here), and every line as JSON in the stack's log file.
        "VIDLINE_LOG_FORMAT": "text",
        "VIDLINE_METRICS_OUTPUT": "log",
    }
    env.update(
        (key, value)
        for key, value in user_env.items()
        if key.startswith("VIDLINE_") and key not in _STACK_VARIABLES | _REPLACED_VARIABLES
    )
    env.update(generated)
    # Presigned POSTs and URLs go through the enforcing S3 front; the apps'
    # own S3 calls go straight to moto.
    env["VIDLINE_S3_PUBLIC_ENDPOINT_URL"] = f"http://{HOST}:{ports.s3_front_port}"
    aws = {
        "AWS_ENDPOINT_URL": endpoint_url,
        **LOCAL_CREDENTIALS,
        "AWS_DEFAULT_REGION": settings.region,
        "AWS_REGION": settings.region,
        # No profile, SSO or credential process of the developer's applies.
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return aws | dict(sorted(env.items()))


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """Write `env` as `export K=V` lines a shell can source."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Written by `python -m devstack`; valid while that stack runs (ids change on every start).",
        "# To run an app by hand against it, e.g. a second API on port 8001 (devstack.api is",
        "# chalice local letting these variables win over .chalice/config.json, as the stack does):",
        "#   set -a; . .vidline/local.env; set +a; python -m devstack.api --port 8001",
        *(f"export {key}={shlex.quote(value)}" for key, value in env.items()),
    ]
    path.write_text("\n".join(lines) + "\n")


def child_environment(
    app_env: Mapping[str, str], base_env: Mapping[str, str], project_dir: Path
) -> dict[str, str]:
    """A child's full environment: the caller's, minus its AWS_* settings, plus
    `app_env`, devstack importable, and the marks that tell a leftover of this
    stack (`devstack.leftovers`)."""
    env = {key: value for key, value in base_env.items() if not key.startswith("AWS_")}
    env.update(app_env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), base_env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"  # their output is relayed line by line
    # Fresh .pyc files under the project would look like code changes to
    # the stack's code watchers and restart the children for nothing.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env[PROJECT_MARK] = str(project_dir)
    env[STACK_PID_MARK] = str(os.getpid())
    return env


class RestartBackoff:
    """How long to wait before restarting a child that died: 1, 2, 4 ... 30 s,
    and 1 s again after a child that had run for a minute."""

    FIRST_S = 1.0
    MAX_S = 30.0
    STEADY_S = 60.0

    def __init__(self) -> None:
        self._next_s = self.FIRST_S

    def delay_s(self, ran_s: float) -> float:
        """The delay before the next start, for a child that died after `ran_s`."""
        if ran_s >= self.STEADY_S:
            self._next_s = self.FIRST_S
        delay, self._next_s = self._next_s, min(self._next_s * 2, self.MAX_S)
        return delay


def claim_ports(ports: Mapping[str, int], project_dir: Path, host: str = HOST) -> None:
    """Make sure every port is free, stopping leftovers of a killed stack of this project.

    Raises StackError naming the first port that is taken (or given twice),
    and what holds it.
    """
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port in seen:
            raise StackError(f"{name} and {seen[port]} are both set to port {port}")
        seen[port] = name
        error = bind_error(host, port)
        if error is None:
            continue
        holders = port_holders(port)
        leftovers = [holder for holder in holders if holder.leftover_of(project_dir)]
        for holder in leftovers:
            say(
                f"port {port} ({name}) is held by pid {holder.pid} ({holder.command}), left over "
                "from a local stack of this project that is gone; stopping it"
            )
            stop_process_group(holder.pid, whole_group=holder.project_dir is not None)
        if leftovers and (error := bind_error(host, port)) is None:
            continue
        raise StackError(_port_taken(name, port, host, error, [h for h in holders if h not in leftovers]))


def bind_error(host: str, port: int) -> OSError | None:
    """Why a server could not listen on `host:port` now; None if it could."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Same options as the servers use, so a port in TIME_WAIT is fine.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return error
    return None


def _port_taken(name: str, port: int, host: str, error: OSError, holders: Sequence[PortHolder]) -> str:
    variable = f"VIDLINE_{name.upper()}_PORT"
    message = f"port {port} on {host} ({name}) is already in use: {error.strerror}."
    for holder in holders:
        message += f" It is held by pid {holder.pid}: {holder.command}."
        if holder.stack_pid is not None:
            message += (
                f" That belongs to the local stack with pid {holder.stack_pid}, which is still running."
            )
        elif "devstack" in holder.argv:
            message += " That is a local stack: stop it with Ctrl-C in its terminal"
            message += f" (or `kill {holder.pid}`)."
    return f"{message} Stop whatever holds it or set {variable} to another port."


class CodeWatcher:
    """Notices changed, added or removed code under some files and folders.

    Watching only the code (not `.venv`, caches or test output) is why the
    stack restarts its children itself instead of using chalice local's
    autoreload, which re-stats every file in the project each second and
    restarts on any new file there.
    """

    CODE = (".py", ".json")

    def __init__(self, *roots: Path, suffixes: tuple[str, ...] | None = CODE) -> None:
        """Watch files ending in `suffixes` under `roots`; every file but hidden ones with None."""
        self._roots = roots
        self._suffixes = suffixes
        self._snapshot = self._scan()

    def changed(self) -> bool:
        """True once after each change."""
        current = self._scan()
        if current == self._snapshot:
            return False
        self._snapshot = current
        return True

    def _scan(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for root in self._roots:
            if root.is_file():
                with contextlib.suppress(OSError):
                    found[str(root)] = root.stat().st_mtime
                continue
            # followlinks: workers/chalicelib is a symlink to the shared library.
            for folder, dirs, files in os.walk(root, followlinks=True):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
                for name in files:
                    if name.endswith(self._suffixes) if self._suffixes else not _is_scratch(name):
                        path = os.path.join(folder, name)
                        with contextlib.suppress(OSError):  # deleted meanwhile
                            found[path] = os.stat(path).st_mtime
        return found


def _is_scratch(name: str) -> bool:
    # Editors' temporary files: .x.swp, x~, #x#, and vim's numbered write test.
    return name.startswith((".", "#")) or name.endswith("~") or name.isdigit()


class Supervised:
    """One child of the stack: restarted after a back-off when it dies unasked,
    or when its code changes."""

    def __init__(
        self,
        label: str,
        start: Callable[[], ChildProcess | None],
        watcher: CodeWatcher,
        *,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.label = label  # for people: "the event pump"
        self.stop_grace_s = stop_grace_s  # from SIGTERM to SIGKILL
        self.child: ChildProcess | None = None
        self._start = start
        self._watcher = watcher
        self._backoff = RestartBackoff()
        self._restart_at: float | None = None
        self._exit_handled = False

    def start(self) -> None:
        """Start the child (now, whatever was pending)."""
        self._restart_at = None
        self.child = self._start()
        self._exit_handled = False

    def stop(self) -> None:
        """Stop the child and forget any pending restart."""
        self._restart_at = None
        if self.child is not None:
            self.child.stop(self.stop_grace_s)
            self.child = None

    def check(self, code_changed_message: str) -> None:
        """Restart the child for changed code, or schedule or carry out a restart after a crash."""
        if self._watcher.changed():
            say(code_changed_message)
            self.stop()
            self.start()
            return
        child = self.child
        if child is not None and not self._exit_handled and (code := child.poll()) is not None:
            self._exit_handled = True
            child.kill_leftovers()  # an ffmpeg its death left running
            if code == CANNOT_LOAD_EXIT:
                say(f"{self.label} could not load its code (see above); it restarts when the code changes")
                return
            delay = self._backoff.delay_s(time.monotonic() - child.started_at)
            ended = "stopped" if code == 0 else "died"  # 0: stopped by someone else's SIGTERM
            say(f"{self.label} {ended} ({describe_exit(code)}); restarting it in {delay:.0f} s")
            self._restart_at = time.monotonic() + delay
        if self._restart_at is not None and time.monotonic() >= self._restart_at:
            say(f"restarting {self.label}")
            self.start()


class LocalStack:
    """Starts, supervises and stops the pieces of the local stack."""

    def __init__(
        self,
        project_dir: Path,
        ports: StackPorts,
        settings: Settings,
        stop_requested: threading.Event,
        *,
        worker_dir: Path | None = None,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.project_dir = project_dir.resolve()
        self.worker_dir = (worker_dir or self.project_dir / "workers").resolve()
        self.ports = ports
        self.settings = settings
        self.endpoint_url = f"http://{HOST}:{ports.moto_port}"
        self.env_file = self.project_dir / ENV_FILE
        self.app_env: dict[str, str] = {}
        self._stop_requested = stop_requested
        self._base_env = dict(os.environ if base_env is None else base_env)
        self._moto: ThreadedMotoServer | None = None
        self._mailbox: MailboxServer | None = None
        self._jobs_queue_url = ""
        self._dlq_url = ""
        self._pump: Supervised | None = None
        self._api: Supervised | None = None
        self._job_timers: Supervised | None = None
        self._cdn: CdnServer | None = None
        self._s3_front: S3Front | None = None
        self._frontend_watcher: CodeWatcher | None = None

    def start(self) -> None:
        """Bring everything up; raises StackError with a reason if something cannot start."""
        # moto and the mailbox are imported here: `devstack.pump` children need neither.
        from moto.server import ThreadedMotoServer

        from devstack import moto_s3
        from devstack.cdn import CdnServer, SignedUrlVerifier
        from devstack.mailbox import MailboxServer
        from devstack.resources import ensure_resources
        from devstack.s3front import S3Front

        claim_ports(
            {
                "moto": self.ports.moto_port,
                "mailbox": self.ports.mailbox_port,
                "api": self.ports.api_port,
                "cdn": self.ports.cdn_port,
                "s3_front": self.ports.s3_front_port,
            },
            self.project_dir,
        )
        if not (self.project_dir / "app.py").is_file():
            raise StackError(f"no Chalice app at {self.project_dir / 'app.py'} (see --project-dir)")

        moto_s3.install()
        moto = ThreadedMotoServer(ip_address=HOST, port=self.ports.moto_port, verbose=False)
        moto.start()
        self._moto = moto
        generated = ensure_resources(self.settings, self.endpoint_url)
        sqs = local_client("sqs", self.endpoint_url, self.settings.region)
        self._jobs_queue_url = sqs.get_queue_url(QueueName=self.settings.jobs_queue)["QueueUrl"]
        self._dlq_url = sqs.get_queue_url(QueueName=self.settings.jobs_dlq)["QueueUrl"]
        self.app_env = app_environment(
            self.settings, self.endpoint_url, generated, self.ports, self._base_env
        )
        # Every app appends its JSON log lines here, for `python -m devstack logs`;
        # emptied on each start, as moto's state is.
        log_file = Path(self.app_env.setdefault("VIDLINE_LOG_FILE", str(self.project_dir / LOG_FILE)))
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text("")
        write_env_file(self.env_file, self.app_env)
        # The same for `python -m devstack job`, per stand-in port (devstack/jobs.py).
        write_env_file(
            self.project_dir / str(PORT_ENV_FILE).format(moto_port=self.ports.moto_port), self.app_env
        )

        s3_front = S3Front(
            HOST,
            self.ports.s3_front_port,
            upstream_url=self.endpoint_url,
            region=self.settings.region,
            credentials=LOCAL_CREDENTIALS,
            cors_origins=(self.settings.cors_origin, self.app_env["VIDLINE_APP_URL"]),
        )
        s3_front.start()
        self._s3_front = s3_front

        mailbox = MailboxServer(HOST, self.ports.mailbox_port, region=self.settings.region)
        mailbox.start()
        self._mailbox = mailbox

        settings = self.settings
        signing_key = local_client("ssm", self.endpoint_url, settings.region).get_parameter(
            Name=settings.cdn_private_key_parameter, WithDecryption=True
        )["Parameter"]["Value"]
        verifier = SignedUrlVerifier(
            signing_key.encode(), settings.cdn_key_pair_id, self.app_env["VIDLINE_MEDIA_BASE_URL"]
        )
        s3 = local_client("s3", self.endpoint_url, settings.region)
        self._cdn = CdnServer(
            HOST,
            self.ports.cdn_port,
            s3=s3,
            media_bucket=settings.media_bucket,
            verifier=verifier,
            cors_origins=(settings.cors_origin,),  # the front ends that may call the API may play its media
        )
        self._frontend_watcher = CodeWatcher(self.project_dir / "frontend", suffixes=None)
        self._publish_frontend()
        self._cdn.start()

        # Stopped, the pump gives its jobs back to the queue: with time for a slow moto.
        self._pump = Supervised(
            "the event pump", self._start_pump, CodeWatcher(self.worker_dir), stop_grace_s=PUMP_STOP_GRACE_S
        )
        self._pump.start()
        if self._pump.child is not None and self._pump.child.poll() is not None:
            raise StackError("the worker could not be loaded; its error is above")

        api_code = (
            self.project_dir / "app.py",
            self.project_dir / "chalicelib",
            self.project_dir / ".chalice",
        )
        self._api = Supervised("chalice local", self._start_api, CodeWatcher(*api_code))
        self._api.start()
        self._wait_for_api()

        if self.settings.local_job_interval_s > 0 and (self.worker_dir / "app.py").is_file():
            self._job_timers = Supervised(
                "the job timers", self._start_job_timers, CodeWatcher(self.worker_dir)
            )
            self._job_timers.start()

    def _start_job_timers(self) -> ChildProcess:
        command = [sys.executable, "-m", "devstack.jobs", "--worker-dir", str(self.worker_dir)]
        command += ["--every", str(self.settings.local_job_interval_s)]
        return ChildProcess(
            "jobs",
            command,
            cwd=self.worker_dir,
            env=child_environment(self.app_env, self._base_env, self.project_dir),
        )

    def _start_api(self) -> ChildProcess:
        command = [sys.executable, "-m", "devstack.api", "--project-dir", str(self.project_dir)]
        command += ["--stage", "local", "--host", HOST, "--port", str(self.ports.api_port)]
        return ChildProcess(
            "api",
            command,
            cwd=self.project_dir,
            env=child_environment(self.app_env, self._base_env, self.project_dir),
        )

    def summary(self) -> list[str]:
        """Where everything is, for people."""
        settings = self.settings
        worker = (
            f"{_relative(self.worker_dir / 'app.py', self.project_dir)}:{DEFAULT_HANDLER}"
            if self._pump is not None and self._pump.child is not None
            else "not running (no workers/app.py yet)"
        )
        return [
            "",
            "Vidline local stack",
            f"  API (chalice local)   http://{HOST}:{self.ports.api_port}",
            f"  AWS stand-in (moto)   {self.endpoint_url}",
            f"  S3 front (enforcing)  {self.app_env['VIDLINE_S3_PUBLIC_ENDPOINT_URL']}"
            "   (presigned URLs and POSTs; checks signatures, expiry, POST policies)",
            f"  mailbox               http://{HOST}:{self.ports.mailbox_port}   (JSON: /api/messages)",
            f"  web app (CDN)         http://{HOST}:{self.ports.cdn_port}   (front end; media under /media/)",
            f"  worker (event pump)   {worker} <- {settings.jobs_queue}",
            f"  dead-letter queue     {settings.jobs_dlq} (after {settings.job_max_receives} receives)"
            f" -> {DEFAULT_DLQ_HANDLER}",
            "  scheduled jobs        "
            + (
                f"every {settings.local_job_interval_s:g} s (VIDLINE_LOCAL_JOB_INTERVAL_S);"
                if self._job_timers is not None
                else "no timers (VIDLINE_LOCAL_JOB_INTERVAL_S=0);"
            )
            + " now: python -m devstack job NAME",
            f"  user pool             {self.app_env['VIDLINE_USER_POOL_ID']}",
            f"  app client            {self.app_env['VIDLINE_USER_POOL_CLIENT_ID']}",
            f"  environment           {self.env_file}",
            "                        (set -a; . .vidline/local.env; set +a  to run the apps by hand)",
            "Ctrl-C stops everything; moto's data is in memory and goes with it.",
            "",
        ]

    def supervise(self) -> int:
        """Watch the children until a stop is requested; the exit code to use.

        Runs on the main thread, which also (re)starts the children: their
        parent-death signal is tied to the thread that spawned them.
        """
        assert self._api is not None and self._pump is not None
        while not self._stop_requested.wait(SUPERVISE_TICK_S):
            self._api.check("API code changed; restarting chalice local")
            if self._frontend_watcher is not None and self._frontend_watcher.changed():
                say("front end changed; rebuilding it")
                self._publish_frontend()
            self._pump.check("worker code changed; restarting the event pump")
            if self._job_timers is not None:
                self._job_timers.check("worker code changed; restarting the job timers")
        return 0

    def stop(self) -> None:
        """Stop the API, the pump, the CDN, the mailbox, the S3 front and moto, in that order."""
        if self._api is not None:
            self._api.stop()
            self._api = None
        if self._job_timers is not None:
            self._job_timers.stop()
            self._job_timers = None
        if self._pump is not None:
            self._pump.stop()
            self._pump = None
        if self._cdn is not None:
            self._cdn.stop()
            self._cdn = None
        if self._mailbox is not None:
            self._mailbox.stop()
            self._mailbox = None
        if self._s3_front is not None:
            self._s3_front.stop()
            self._s3_front = None
        if self._moto is not None:
            self._moto.stop()
            self._moto = None

    def _publish_frontend(self) -> None:
        """Build `frontend/` with this stack's config and have the CDN serve it."""
        from deploy.frontend import build_site, frontend_config

        assert self._cdn is not None
        config = frontend_config(
            f"http://{HOST}:{self.ports.api_port}",
            self.settings.stage,
            needs_confirmation=self.app_env.get("VIDLINE_AUTO_CONFIRM_SIGNUPS") != "true",
            max_upload_bytes=self.settings.max_upload_bytes,
            allowed_content_types=self.settings.allowed_content_types,
        )
        try:
            self._cdn.publish(build_site(config, self.project_dir / SITE_DIR))
        except (OSError, UnicodeDecodeError) as error:
            say(f"the front end could not be built: {error}")

    def _start_pump(self) -> ChildProcess | None:
        """Start the event pump if there is a worker and wait until it has loaded
        it (or failed to: then the child has exited)."""
        app_file = self.worker_dir / "app.py"
        if not app_file.is_file():
            say(f"no worker app at {app_file}; the event pump starts when it appears")
            return None
        read_fd, write_fd = os.pipe()
        command = [sys.executable, "-m", "devstack.pump", "--worker-dir", str(self.worker_dir)]
        command += ["--queue-url", self._jobs_queue_url, "--handler", DEFAULT_HANDLER]
        command += ["--dlq-url", self._dlq_url, "--dlq-handler", DEFAULT_DLQ_HANDLER]
        command += ["--idempotency-table", self.settings.idempotency_table]
        in_flight = str(PUMP_IN_FLIGHT_FILE).format(moto_port=self.ports.moto_port)
        command += ["--in-flight-file", str(self.project_dir / in_flight)]
        command += ["--ready-fd", str(write_fd)]
        try:
            pump = ChildProcess(
                "worker",
                command,
                cwd=self.worker_dir,
                env=child_environment(self.app_env, self._base_env, self.project_dir),
                pass_fds=[write_fd],
                # Lets a pump whose stack is gone take its ffmpeg with it.
                parent_death_signal=signal.SIGTERM,
            )
        finally:
            os.close(write_fd)
        try:
            if not self._wait_until_ready(read_fd, pump, PUMP_START_TIMEOUT_S):
                pump.wait_for_exit()
        finally:
            os.close(read_fd)
        return pump

    def _wait_until_ready(self, fd: int, child: ChildProcess, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._stop_requested.is_set():
                child.stop()
                raise _Interrupted
            readable, _, _ = select.select([fd], [], [], 0.2)
            if readable:
                return bool(os.read(fd, 64))  # b"" is end of file: the child is gone
        child.stop()
        raise StackError(f"the {child.name} process did not get ready within {timeout_s:.0f} s")

    def _wait_for_api(self) -> None:
        assert self._api is not None and self._api.child is not None
        api = self._api.child
        deadline = time.monotonic() + API_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._stop_requested.is_set():
                raise _Interrupted
            if api.poll() is not None:
                raise StackError(
                    f"chalice local exited ({describe_exit(api.poll() or 0)}); its output is above"
                )
            if _answers_http(HOST, self.ports.api_port):
                return
            time.sleep(0.2)
        raise StackError(
            f"chalice local did not answer on port {self.ports.api_port} within {API_START_TIMEOUT_S:.0f} s "
            "(an error importing app.py is printed above)"
        )


def _answers_http(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", "/")
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()
    return True


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="Run Vidline's whole back end on this machine against moto. Ctrl-C stops it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "environment variables:\n"
            "  VIDLINE_API_PORT      chalice local (default 8000)\n"
            "  VIDLINE_MOTO_PORT     moto, the AWS stand-in (default 5000)\n"
            "  VIDLINE_MAILBOX_PORT  the mailbox for sent email (default 8025)\n"
            "  VIDLINE_CDN_PORT      the CDN stand-in, used for VIDLINE_APP_URL (default 8080)\n"
            "  VIDLINE_S3_FRONT_PORT the enforcing S3 front presigned URLs point at (default 9000)\n"
            "  VIDLINE_*             any app setting (chalicelib/settings.py) is passed on to the apps\n"
            "\n`python -m devstack job NAME` runs a scheduled job of the workers now, against the\n"
            "running stack (see `python -m devstack job --help`).\n"
            "`python -m devstack logs VIDEO_ID` prints what the stack logged about one video.\n"
            f"\nThe apps' environment is written to {ENV_FILE} in the project directory.\n"
            f'"{READY_LINE}" is printed once everything answers.'
        ),
    )
    parser.add_argument(
        "--project-dir",
        type=Path,
        default=REPO_ROOT,
        help="the API's Chalice project; its workers/ holds the worker app (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="also log every request moto serves")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the local stack in the foreground; the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        ports, settings = StackPorts(), Settings()
    except ValidationError as error:
        say(f"error: invalid setting: {error}")
        return 2

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)

    stack = LocalStack(args.project_dir, ports, settings, stop_requested)
    try:
        stack.start()
        for line in stack.summary():
            say(line, prefix="")
        say(READY_LINE, prefix="")
        exit_code = stack.supervise()
    except StackError as error:
        say(f"error: {error}")
        exit_code = 1
    except _Interrupted:
        exit_code = 0
    finally:
        say("stopping")
        stack.stop()
    say("stopped")
    return exit_code
