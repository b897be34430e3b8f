"""The ``odecast`` command: ``odecast serve`` runs the HTTP server on the bundled models.

Options override the ``ODECAST_*`` environment variables, which override the defaults
(:class:`service.api.settings.Settings`). Training is ``python -m training``.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app
    from service.api.logs import configure_logging
    from service.api.settings import Settings

    overrides = {name: getattr(args, name) for name in ("host", "port", "models_dir", "log_level")
                 if getattr(args, name) is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for error in exc.errors():
            print(f"odecast serve: {'.'.join(map(str, error['loc']))}: {error['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None,
                access_log=False, timeout_graceful_shutdown=30)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="odecast", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the models over HTTP (settings: ODECAST_* variables)")
    serve.add_argument("--host", help="interface to bind (default 127.0.0.1; ODECAST_HOST)")
    serve.add_argument("--port", type=int, help="port (default 8000; ODECAST_PORT)")
    serve.add_argument("--models-dir", help="checkpoint directories (default: the bundled "
                                                       "models/; ODECAST_MODELS_DIR)")
    serve.add_argument("--log-level", help="debug, info, warning or error (ODECAST_LOG_LEVEL)")
    args = parser.parse_args(argv)
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())
