"""``skns-metrics --config PATH`` (also ``python -m skns``): run the service in the foreground."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__, config, logs
from .errors import AlreadyRunning, ConfigError, ControlError

# A second instance on the same state_dir (EX_TEMPFAIL: try again once the first stops).
EXIT_ALREADY_RUNNING = 75

STATE_UMASK = 0o027


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="skns-metrics", description="Run the skns service in the foreground."
    )
    parser.add_argument(
        "--config",
        default=str(config.default_path()),
        help="TOML config file (default: $SKNS_CONFIG or ./config.toml)",
    )
    parser.add_argument("--version", action="version", version=f"skns {__version__}")
    args = parser.parse_args(argv)
    # State files (chat messages, journals, metrics) are for the service and its group
    # alone, whatever umask we were started with: files 0640, directories 0750 at most.
    os.umask(STATE_UMASK)
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"skns-metrics: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.service.log_level, "supervisor")
    from .supervisor import Supervisor

    try:
        return Supervisor(settings).run()
    except AlreadyRunning as exc:
        print(f"skns-metrics: {exc}", file=sys.stderr)
        return EXIT_ALREADY_RUNNING
    except ControlError as exc:
        print(f"skns-metrics: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
