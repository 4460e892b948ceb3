"""``skns-ctl``: look at and steer a running skns.

Exit status: 0 ok, 1 failure, 2 usage or bad config, 3 the service is not
running (as ``systemctl status`` does).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from . import config, jsonexact
from .errors import ConfigError, ControlError, ServiceNotRunning
from .metrics.output import last_lines
from .subsystems import NAMES

EXIT_NOT_RUNNING = 3
INSTALLED_CONFIG = Path("/etc/skns/config.toml")


def _config_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if "SKNS_CONFIG" in os.environ:
        return Path(os.environ["SKNS_CONFIG"])
    local = Path("config.toml")
    return local if local.exists() or not INSTALLED_CONFIG.exists() else INSTALLED_CONFIG


def _socket_path(args: argparse.Namespace) -> Path:
    """The control socket: from --socket, else from the config, even a broken one."""
    if args.socket:
        return Path(args.socket)
    path, error = config.control_socket(_config_path(args.config))
    if error is not None:
        print(f"skns-ctl: warning: the config is broken: {error}", file=sys.stderr)
        print(f"skns-ctl: asking the service on {path}", file=sys.stderr)
    return path


# -- formatting -------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d {h}h"
    return f"{h}h {m:02d}m" if h else f"{m}m {s:02d}s"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return str(n)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def flatten(stats: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested stats as dotted keys: {"hold_us": {"p99": 3}} -> [("hold_us.p99", 3)]."""
    if isinstance(stats, dict):
        out: list[tuple[str, Any]] = []
        for key, value in stats.items():
            out += flatten(value, f"{prefix}{key}.")
        return out
    return [(prefix.rstrip("."), stats)]


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, list | tuple):  # e.g. the relay's problems: words, not a Python repr
        return "[" + "; ".join(_value(item) for item in v) + "]" if v else "none"
    return "-" if v is None else str(v)


def when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def render_status(status: dict[str, Any]) -> str:
    svc = status["service"]
    out = [
        f"skns {svc['version']}: {svc['state']}, pid {svc['pid']}, up {duration(svc['uptime'])}",
        f"  config:  {svc['config']}",
        f"  state:   {svc['state_dir']}",
        f"  summary: {svc['summary']}",
    ]
    if svc.get("config_error"):
        out.append(f"  reload refused, the previous config runs on: {svc['config_error']}")
    out += [f"  {name}: {text}" for name, text in status.get("trouble", {}).items()]
    for step, fault in (svc.get("faults") or {}).items():
        out.append(
            f"  fault:   {step}: {fault['count']}x, last {when(fault['last'])}: {fault['error']}"
        )
    metrics = status["subsystems"].get("metrics")
    if metrics:
        last = metrics.get("last_window")
        last_text = (
            f"{when(last['timestamp'])} ({last['count_type']}, count {last['count']})"
            if last
            else "none yet"
        )
        rejected = metrics["rejected"]
        reasons = ", ".join(f"{k} {v}" for k, v in rejected.items() if v) or "none"
        condition = (metrics.get("output_state") or {}).get("condition")
        out += [
            f"  output:  {metrics['output']}" + (f" ({condition})" if condition else ""),
            f"  last window: {last_text}",
            "",
            f"metrics on udp {metrics['listen']}: {metrics['workers']} workers, "
            f"{metrics['accepted']} accepted, {sum(rejected.values())} rejected ({reasons}), "
            f"{metrics['kernel_drops']} kernel drops, {metrics['windows_written']} windows written",
        ]
    rows = [
        [
            c["name"],
            str(c["pid"] or "-"),
            ",".join(map(str, c["cpus"])) if c["cpus"] else "-",
            "-" if c["cpu_percent"] is None else f"{c['cpu_percent']:.1f}",
            size(c["rss"]),
            duration(c["uptime"]),
            str(c["restarts"]),
            "up" if c["up"] else "starting" if c["running"] else "down",
        ]
        for c in status["children"]
    ]
    out += ["", table(["CHILD", "PID", "CPUS", "CPU%", "RSS", "UPTIME", "RESTARTS", "STATE"], rows)]
    stat_rows = [c for c in status["children"] if c.get("stats")]
    if stat_rows:
        out.append("")
        for c in stat_rows:
            pairs = ", ".join(f"{k} {_value(v)}" for k, v in flatten(c["stats"]))
            out.append(f"{c['name']}: {pairs}")
    return "\n".join(out)


# -- commands ----------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    status = _request(args, "status")
    if args.json:
        print(jsonexact.dumps(status, option=orjson.OPT_INDENT_2).decode())
    else:
        print(render_status(status))
    return 0


def _request(args: argparse.Namespace, command: str) -> dict[str, Any]:
    from .control import request

    answer = request(_socket_path(args), command)
    if not answer.get("ok"):
        raise ControlError(answer.get("error", "the service refused the command"))
    return answer


def cmd_simple(args: argparse.Namespace) -> int:
    answer = _request(args, args.command)
    print(answer.get("message", "ok"))
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    """Re-execute the supervisor in place and wait until the new run serves."""
    from .control import request

    before = _request(args, "restart")["started"]
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            status = request(_socket_path(args), "status")
        except (ControlError, OSError):  # between the two runs: nobody answers
            continue
        service = status.get("service", {})
        if service.get("started", before) != before and service.get("state") == "running":
            print(f"restarted (pid {service.get('pid')}, sockets and metrics state kept)")
            return 0
    raise ControlError(f"the service did not come back within {args.timeout:g}s")


def cmd_check_config(args: argparse.Namespace) -> int:
    path = _config_path(args.path or args.config)
    settings = config.load(path)
    enabled = [name for name in NAMES if getattr(settings, name).enabled]
    print(f"{path}: ok (enabled: {', '.join(enabled) or 'nothing'})")
    return 0


def cmd_remake_executor_stream(args: argparse.Namespace) -> int:
    """Remove the executor's stream and buckets: the next router makes them with its
    partitions and lease_ttl (README, cluster mode: changing partitions or lease_ttl)."""
    import asyncio

    from .errors import ClusterBusy

    path = _config_path(args.config)
    cluster = config.load(path, deep=False).cluster
    if not cluster.enabled:
        raise ConfigError(path, "cluster.nats", "empty: not in cluster mode")
    from .executor.remake import remake  # nats-py is loaded in cluster mode only

    try:
        removed = asyncio.run(remake(cluster, args.force))
    except (ClusterBusy, TimeoutError) as exc:
        print(f"skns-ctl: nothing removed: {exc}", file=sys.stderr)
        return 1
    print(f"removed {', '.join(removed) or 'nothing (none there)'}: the next executor to start "
          "makes them with its [cluster] partitions and lease_ttl")  # fmt: skip
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    output = config.load(_config_path(args.config), deep=False).metrics.output
    rows = last_lines(output, args.n)
    if not rows:
        print(f"{output}: no windows written yet")
        return 0
    print(
        table(
            ["WINDOW END", "TYPE", "COUNT", "A1_SUM", "A2_MAX", "A3_MIN"],
            [
                [
                    when(float(r.get("timestamp", 0))),  # type: ignore[arg-type]
                    str(r.get("count_type")),
                    str(r.get("count")),
                    str(r.get("A1_sum")),
                    str(r.get("A2_max")),
                    str(r.get("A3_min")),
                ]
                for r in rows
            ],
        )
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    names = list(NAMES) if args.subsystem == "all" else [args.subsystem]
    worst = 0
    for name in names:
        if len(names) > 1:
            print(f"\n=== bench {name} ===", flush=True)
        bench = importlib.import_module(f"skns.{name}.bench")
        worst = max(worst, bench.main(list(args.args)))
    return worst


def cmd_sim(args: argparse.Namespace) -> int:
    from .relay.__main__ import sim_main

    return sim_main(list(args.args))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skns-ctl", description="Look at and steer a running skns.")
    p.add_argument(
        "--config", help="config file (default: $SKNS_CONFIG, ./config.toml, /etc/skns/config.toml)"
    )
    p.add_argument(
        "--socket", help="control socket (default: service.control_socket of the config)"
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="the service, its children and their counters")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
    for name, text in (
        ("reload", "re-read the config (like SIGHUP)"),
        ("reopen", "reopen output files"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=cmd_simple)
    r = sub.add_parser(
        "restart", help="re-execute the supervisor in place, keeping sockets and state (SIGUSR2)"
    )
    r.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for it to serve again"
    )
    r.set_defaults(func=cmd_restart)
    c = sub.add_parser("check-config", help="validate a config file")
    c.add_argument("path", nargs="?", help="the file (default: as --config)")
    c.set_defaults(func=cmd_check_config)
    t = sub.add_parser("tail", help="the last windows of metrics.jsonl")
    t.add_argument("-n", type=int, default=10, help="how many lines (default 10)")
    t.set_defaults(func=cmd_tail)
    x = sub.add_parser(
        "remake-executor-stream",
        help="cluster mode, every executor stopped: remove the executor's stream and buckets "
        "(to change partitions or lease_ttl)",
    )
    x.add_argument("--force", action="store_true", help="even with events not run (lost)")
    x.set_defaults(func=cmd_remake_executor_stream)
    b = sub.add_parser("bench", help="run a subsystem's benchmark")
    # cluster: the task server on a throwaway NATS JetStream cluster (not part of "all").
    b.add_argument("subsystem", choices=[*NAMES, "cluster", "all"])
    b.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    b.set_defaults(func=cmd_bench)
    m = sub.add_parser("sim", help="run a simulator (relay: source and sink servers)")
    m.add_argument("subsystem", choices=["relay"])
    m.add_argument("args", nargs=argparse.REMAINDER, help="passed to the simulator (--help)")
    m.set_defaults(func=cmd_sim)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ServiceNotRunning as exc:
        print(f"skns-ctl: {exc}", file=sys.stderr)
        return EXIT_NOT_RUNNING
    except ConfigError as exc:
        print(f"skns-ctl: {exc}", file=sys.stderr)
        return 2
    except ControlError as exc:
        print(f"skns-ctl: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
