"""enter(): what every child does between the fork and its exit."""

import asyncio
import os
import signal

from skns import config
from skns.child import ChildContext, ChildSpec, enter
from skns.shm import SlotTable


def run_forked(target, cpus=None):
    settings = config.parse({}, "x.toml")
    table = SlotTable(1)
    spec = ChildSpec("metrics", "test-role", 7, target, cpus)
    pid = os.fork()
    if pid == 0:
        os._exit(enter(spec, settings, table.slots[0]))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), table.slots[0]


def test_target_returning_exits_0_and_sees_its_context(tmp_path):
    out = tmp_path / "seen"

    def target(ctx: ChildContext) -> None:
        with open(f"/proc/{os.getpid()}/cmdline", "rb") as f:
            title = f.read().split(b"\0")[0].decode()
        handler = signal.getsignal(signal.SIGTERM)
        out.write_text(
            f"{title}|{ctx.spec.name}|{handler == signal.SIG_DFL}|{sorted(os.sched_getaffinity(0))}"
        )
        ctx.heartbeat()
        ctx.ready()
        ctx.publish({"hello": 1})

    code, slot = run_forked(target, cpus=(0,))
    assert code == 0
    assert out.read_text() == "skns-metrics: test-role 7|test-role 7|True|[0]"
    assert slot.is_ready() and slot.heartbeat_ns() > 0
    assert slot.read() == b'{"hello":1}'


def test_target_raising_exits_1(capfd):
    def target(ctx: ChildContext) -> None:
        raise RuntimeError("boom")

    code, _ = run_forked(target)
    assert code == 1
    assert "test-role 7 failed" in capfd.readouterr().err


def test_serve_runs_main_until_sigterm_and_publishes_stats():
    def target(ctx: ChildContext) -> None:
        async def main(stop):
            ctx.ready()
            os.kill(os.getpid(), signal.SIGTERM)
            await stop.wait()

        ctx.serve(main, lambda: {"served": True}, interval=0.01)

    code, slot = run_forked(target)
    assert code == 0
    assert slot.read() == b'{"served":true}'
    assert slot.heartbeat_ns() > 0


def test_publish_soon_publishes_before_the_interval(tmp_path):
    seen = tmp_path / "seen"

    def target(ctx: ChildContext) -> None:
        state = {"n": 0}

        async def main(stop):
            await asyncio.sleep(0.1)  # the first beat has published n=0
            state["n"] = 1
            ctx.publish_soon()
            for _ in range(200):  # 2 s at most; the interval is a minute
                if ctx.slot.read() == b'{"n":1}':
                    break
                await asyncio.sleep(0.01)
            seen.write_bytes(ctx.slot.read())

        ctx.serve(main, lambda: dict(state), interval=60)

    code, _ = run_forked(target)
    assert code == 0
    assert seen.read_bytes() == b'{"n":1}'


def test_published_stats_keep_integers_past_64_bits():
    def target(ctx: ChildContext) -> None:
        ctx.publish({"sum": 2**70, "n": 1})

    code, slot = run_forked(target)
    assert code == 0
    assert slot.read() == b'{"sum":1180591620717411303424,"n":1}'
