import pytest

from skns.cluster import bench
from skns.cluster.natscluster import find_server


@pytest.mark.skipif(find_server() is None, reason="nats-server is not installed")
def test_the_cluster_bench_runs_and_prints_its_figures_beside_the_single_host(capsys):
    assert bench.main(["--trips", "5", "--jobs", "40", "--clients", "2", "--replicas", "1"]) == 0
    out = capsys.readouterr().out
    for line in ("round trip, single host:", "round trip, cluster", "fetch on b", "submit rate"):
        assert line in out
    assert "x acks)" in out
