import pytest

from skns.cluster import bench
from skns.cluster.natscluster import find_server

pytestmark = pytest.mark.skipif(find_server() is None, reason="nats-server is not installed")


def test_the_cluster_bench_prints_a_table_of_its_figures_beside_their_baselines(capsys):
    # The executor phase starts and kills whole hosts for minutes: make bench runs it.
    argv = ["--only", "jetstream,tasks", "--messages", "300", "--window", "50", "--kv-rounds", "2"]
    argv += ["--trips", "5", "--jobs", "40", "--clients", "2", "--replicas", "1"]
    assert bench.main(argv) == 0
    captured = capsys.readouterr()
    head, table = captured.out.split("\n\n", 1)
    assert "cores" in head and "load average" in head
    lines = table.splitlines()
    assert lines[0].split() == ["measure", "cluster", "baseline", "(same", "run)", "ratio"]
    for measure, baseline in (
        ("JetStream publish, R3, pipelined (50 in flight)", "R1:"),
        ("JetStream publish, R1, pipelined", "core NATS, nothing stored"),
        ("key-value update with revision", "R1:"),
        ("ordered consumer, whole stream, R3", "R1:"),
        ("stream info listing a bucket's keys", "R1:"),
        ("key-value get", "R1:"),
        ("purge of one subject below a sequence", "R1:"),
        ("tasks: round trip of factorial 20", "single host:"),
        ("tasks: submit rate", "single host:"),
    ):
        line = next(line for line in lines if line.startswith(measure))
        assert baseline in line and "x" in line.split()[-1], line
    race = next(line for line in lines if line.startswith("two takers of one lease at once"))
    assert "of a released key" in race and "R1:" in race and "never both:" in race
    assert "publishes answered with an error" not in captured.out
    # progress lines came while it ran, on stderr
    assert "pipelined publish:" in captured.err and "round trip, single host" in captured.err


def test_an_unknown_phase_is_refused_with_the_known_ones():
    with pytest.raises(SystemExit) as exc:
        bench.main(["--only", "jetstream,bogus"])
    assert exc.value.code == 2
