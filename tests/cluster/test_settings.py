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


def parse_cluster(table: dict[str, str]) -> ClusterSettings:
    return config.parse({"cluster": table}, Path("/etc/skns/config.toml")).cluster


def test_tls_files_are_read_at_load(tls_files: Path) -> None:
    s = parse_cluster(
        {
            "tls_ca": str(tls_files / "ca.pem"),
            "tls_cert": str(tls_files / "client.pem"),
            "tls_key": str(tls_files / "client.key"),
            "tls_hostname": "nats.skns.test",
        }
    )
    assert (s.tls_ca, s.tls_cert, s.tls_key) == tuple(
        tls_files / name for name in ("ca.pem", "client.pem", "client.key")
    )
    assert s.tls_hostname == "nats.skns.test"
    plain = parse_cluster({})
    assert (plain.tls_ca, plain.tls_cert, plain.tls_key, plain.tls_hostname) == ("", "", "", "")


@pytest.mark.parametrize(
    ("table", "key", "file", "words"),
    [
        ({"tls_ca": "nowhere.pem"}, "tls_ca", "nowhere.pem", "no such file"),
        ({"tls_ca": "."}, "tls_ca", "", "is a directory, not a file"),
        ({"tls_ca": "client.key"}, "tls_ca", "client.key", "holds no PEM certificate"),
        ({"tls_ca": "broken.pem"}, "tls_ca", "broken.pem", "cannot read it: [X509] PEM lib"),
        ({"tls_cert": "client.pem"}, "tls_key", None, "tls_cert is set: give its key too"),
        ({"tls_key": "client.key"}, "tls_cert", None, "tls_key is set: give its certificate"),
        (
            {"tls_cert": "client.key", "tls_key": "client.key"},
            "tls_cert", "client.key", "holds no PEM certificate",
        ),
        (
            {"tls_cert": "client.pem", "tls_key": "client.pem"},
            "tls_key", "client.pem", "holds no PEM private key",
        ),
        (
            {"tls_cert": "broken.pem", "tls_key": "client.key"},
            "tls_cert", "broken.pem", "OpenSSL cannot read it: [SSL] PEM lib",
        ),
        (
            {"tls_cert": "client.pem", "tls_key": "server.key"},
            "tls_key", "server.key", "is not the key of",
        ),
        (
            {"tls_cert": "client.pem", "tls_key": "encrypted.key"},
            "tls_key", "encrypted.key", "is encrypted: give a key without a passphrase",
        ),
    ],
)  # fmt: skip
def test_bad_tls_files_name_the_key_and_the_file(
    tls_files: Path, table: dict[str, str], key: str, file: str | None, words: str
) -> None:
    broken = tls_files / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as err:
        parse_cluster({name: str(tls_files / value) for name, value in table.items()})
    assert err.value.key == f"cluster.{key}"
    assert str(err.value).startswith("/etc/skns/config.toml: ")
    assert words in str(err.value)
    if file is not None:
        assert f"{tls_files / file}: " in str(err.value)
