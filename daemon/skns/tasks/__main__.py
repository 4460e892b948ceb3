"""``python -m skns.tasks --config PATH``: the task server alone, in the foreground.

The process becomes the ``tasks`` child exactly as the supervisor would run it
(same ``enter``), with a private stats slot; SIGTERM or Ctrl-C stops it. Tests
and the benchmark start the server this way.
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import config
from ..child import enter
from ..errors import ConfigError
from ..shm import SlotTable
from .service import children


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skns.tasks", description=__doc__)
    parser.add_argument("--config", default=str(config.default_path()), help="config.toml path")
    args = parser.parse_args(argv)
    try:
        settings = config.load(args.config)
    except ConfigError as exc:
        print(f"skns.tasks: {exc}", file=sys.stderr)
        return 2
    (spec,) = children(settings)
    table = SlotTable(1)
    status = enter(spec, settings, table.slots[0])
    sys.stdout.flush()
    os._exit(status)  # as a supervised child does: no interpreter teardown


if __name__ == "__main__":
    sys.exit(main())
