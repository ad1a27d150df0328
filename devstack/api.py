"""`chalice local` for the API, as the local stack runs it.

    python -m devstack.api --project-dir . --stage local --port 8000

It is chalice local's server (routing, the Lambda event, CORS preflights)
started without its CLI, for two differences:

- the environment the stack set wins over the stage's `config.json`
  environment, whose top-level defaults name the default resources (see
  `devstack.pump.local_environment`); so `VIDLINE_UPLOADS_BUCKET=x make dev`
  presigns uploads to bucket x;
- the errors chalice local's gateway and the HTTP server answer by
  themselves (an unknown route's "Missing Authentication Token", a TRACE's
  HTML page) come in the API's `{"error": {"code", "message"}}` shape, as API
  Gateway's gateway responses give them on AWS (deploy/merge.py).

Statuses stay chalice local's. No autoreload: the stack restarts this process
when the code changes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chalice.app import Chalice
from chalice.cli.factory import CLIFactory
from chalice.config import Config
from chalice.deploy.validate import validate_routes
from chalice.local import (
    ChaliceRequestHandler,
    CustomLocalChalice,
    LocalChalice,
    LocalDevServer,
    LocalGatewayException,
)

from devstack.pump import local_environment

# The API's error codes for the statuses chalice local's gateway and the
# HTTP server answer with by themselves.
GATEWAY_ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "invalid_request",  # an unknown route: API Gateway's DEFAULT_4XX
    408: "request_timeout",
    414: "invalid_request",
    431: "invalid_request",
    501: "method_not_allowed",  # a method no route can have, such as TRACE
}


def error_body(status: int, message: str) -> bytes:
    """The API's error shape for a response the app itself did not make."""
    code = GATEWAY_ERROR_CODES.get(status, "invalid_request" if status < 500 else "internal_error")
    return json.dumps({"error": {"code": code, "message": message}}).encode()


class ApiRequestHandler(ChaliceRequestHandler):
    """chalice local's request handler, with its own errors in the API's shape."""

    def __init__(self, *args: Any, cors_origin: str, **kwargs: Any) -> None:
        self._cors_origin = cors_origin  # before handling: the base __init__ serves the request
        super().__init__(*args, **kwargs)

    def _send_error_response(self, error: LocalGatewayException) -> None:
        try:
            message = str(json.loads(error.body or b"{}").get("message") or "")
        except (ValueError, AttributeError):
            message = ""
        headers = {
            **error.headers,
            "Access-Control-Allow-Origin": self._cors_origin,
            "Content-Type": "application/json",
        }
        status = error.CODE
        self._send_http_response(status, headers, error_body(status, message or self.responses[status][0]))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own errors (an unsupported method, a malformed request) as JSON."""
        self.log_error("code %d, message %s", code, message)
        body = error_body(code, message or self.responses.get(code, ("Error",))[0])
        self.send_response(code, message)
        self.send_header("Connection", "close")
        self.close_connection = True
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Access-Control-Allow-Origin", self._cors_origin)
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)


def load_api(project_dir: Path, stage: str) -> tuple[Chalice, Config]:
    """Import the project's app the way `chalice local` does, with the process
    environment winning over the stage's configured one."""
    factory = CLIFactory(str(project_dir), environ=os.environ)
    config = factory.create_config_obj(chalice_stage_name=stage)
    os.environ.update(local_environment(config.environment_variables, os.environ))
    app = factory.load_chalice_app()
    validate_routes(app.routes)  # what `chalice deploy` would refuse
    return app, config


def create_server(app: Chalice, config: Config, host: str, port: int) -> LocalDevServer:
    """chalice local's threaded server for `app` on `host:port`, with ApiRequestHandler."""
    # As chalice.local.create_local_server does: a request per thread.
    CustomLocalChalice.__bases__ = (LocalChalice, app.__class__)
    app.__class__ = CustomLocalChalice
    cors_origin = os.environ.get("VIDLINE_CORS_ORIGIN", "*")
    handler = functools.partial(ApiRequestHandler, cors_origin=cors_origin)
    return LocalDevServer(app, config, host, port, handler_cls=handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the API until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(prog="python -m devstack.api", description=main.__doc__)
    parser.add_argument("--project-dir", type=Path, default=Path.cwd(), help="the API's Chalice project")
    parser.add_argument("--stage", default="local", help="Chalice stage whose config.json settings apply")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    # As chalice local: the app's log lines on stdout, and the CLI-mode flag apps may test.
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    os.environ["AWS_CHALICE_CLI_MODE"] = "true"
    project_dir: Path = args.project_dir.resolve()
    os.chdir(project_dir)
    try:
        app, config = load_api(project_dir, args.stage)
    except Exception:
        logging.getLogger("devstack.api").exception("could not load the API from %s", project_dir / "app.py")
        return 2
    server = create_server(app, config, args.host, args.port)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
