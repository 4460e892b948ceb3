from pathlib import Path

import pytest

from skns import config
from skns.cluster.settings import ClusterSettings
from skns.errors import ConfigError


def test_absent_or_empty_is_single_host():
    assert not config.parse({}, Path("x")).cluster.enabled
    assert not config.parse({"cluster": {"nats": []}}, Path("x")).cluster.enabled


def test_a_cluster_table_is_typed():
    s = config.parse(
        {"cluster": {"nats": ["nats://127.0.0.1:4222", "tls://n2:4222"], "name": "a-1"}}, Path("x")
    ).cluster
    assert s.enabled
    assert s.nats == ("nats://127.0.0.1:4222", "tls://n2:4222")
    assert s.host_name == "a-1"
    assert (s.partitions, s.replicas, s.lease_ttl) == (64, 1, 3.0)


def test_the_hostname_is_made_safe_for_subjects():
    name = ClusterSettings().host_name
    assert name and "." not in name and " " not in name


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"nats": "nats://h:4222"}, "cluster.nats", "expected a list of a string"),
        ({"nats": ["http://h:4222"]}, "cluster.nats", "is not nats://host:port"),
        ({"nats": ["nats://h"]}, "cluster.nats", "is not nats://host:port"),
        ({"nats": ["nats://h:99999"]}, "cluster.nats", "is not nats://host:port"),
        ({"name": "a.b"}, "cluster.name", "letters, digits"),
        ({"partitions": 0}, "cluster.partitions", "within 1..4096"),
        ({"replicas": 2}, "cluster.replicas", "must be 1, 3 or 5"),
        ({"lease_ttl": 0}, "cluster.lease_ttl", "must be > 0"),
        ({"publish_timeout": -1}, "cluster.publish_timeout", "must be > 0"),
        ({"leader": 1}, "cluster.leader", "unknown key"),
    ],
)
def test_bad_values_name_the_file_and_the_key(table, key, words):
    with pytest.raises(ConfigError) as err:
        config.parse({"cluster": table}, Path("/etc/skns/config.toml"))
    assert err.value.key == key
    assert words in str(err.value)
    assert str(err.value).startswith("/etc/skns/config.toml: ")
