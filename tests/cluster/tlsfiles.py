"""Certificates made at test time with the ``openssl`` command (a throwaway CA, server and
client certificates it signed), and ``nats-server`` processes serving TLS with them."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from skns.ports import free_ports

_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def find_openssl() -> str | None:
    return shutil.which("openssl")


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _signed(folder: Path, name: str, extensions: str) -> None:
    """``name``.pem and ``name``.key, signed by the CA in ``folder``."""
    key, csr, ext = (folder / f"{name}.{suffix}" for suffix in ("key", "csr", "ext"))
    _openssl("req", *_EC, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    ext.write_text(extensions + "\n")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", folder / "ca.pem", "-CAkey", folder / "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", ext, "-out", folder / f"{name}.pem",
    )  # fmt: skip


def make(folder: Path) -> Path:
    """In ``folder``: ``ca``, ``server`` (for 127.0.0.1 and localhost), ``named`` (for
    nats.skns.test only), ``local`` (for localhost only) and ``client`` (.pem, .key), and
    ``encrypted.key`` (the client's key under a passphrase)."""
    subj = "/CN=skns test CA"
    _openssl("req", "-x509", *_EC, "-keyout", folder / "ca.key", "-out", folder / "ca.pem",
             "-days", "2", "-subj", subj)  # fmt: skip
    _signed(folder, "server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
    _signed(folder, "named", "subjectAltName=DNS:nats.skns.test")
    _signed(folder, "local", "subjectAltName=DNS:localhost")
    _signed(folder, "client", "extendedKeyUsage=clientAuth")
    _openssl("pkey", "-in", folder / "client.key", "-aes256", "-passout", "pass:secret",
             "-out", folder / "encrypted.key")  # fmt: skip
    return folder


def _listening(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited: {log.read_text(errors='replace')[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nats-server not listening on {port} after 10 s")
        time.sleep(0.02)


@dataclasses.dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]


@contextlib.contextmanager
def servers(
    files: Path,
    work: Path,
    count: int = 1,
    cert: str = "server",
    verify: bool = False,
    port: int | None = None,
) -> Iterator[list[Server]]:
    """``count`` nats-server processes (one cluster; JetStream when only one) requiring TLS with
    ``cert`` (and, with ``verify``, a client certificate signed by the CA); ``port``: the
    first one's (a server started again where one was)."""
    ports = free_ports(2 * count)
    if port is not None:
        ports[0] = port
    started: list[Server] = []
    try:
        for i in range(count):
            port, route = ports[2 * i], ports[2 * i + 1]
            routes = ", ".join(f"nats://127.0.0.1:{r}" for r in ports[1::2] if r != route)
            conf = work / f"nats{i}.conf"
            conf.write_text(
                f"""
                listen: "127.0.0.1:{port}"
                server_name: "tls{i}"
                {f'jetstream {{ store_dir: "{work / f"store{i}"}" }}' if count == 1 else ""}
                {
                    f'cluster {{ name: "tls", listen: "127.0.0.1:{route}", routes: [{routes}] }}'
                    if count > 1
                    else ""
                }
                tls {{
                    cert_file: "{files / f"{cert}.pem"}"
                    key_file: "{files / f"{cert}.key"}"
                    ca_file: "{files / "ca.pem"}"
                    verify: {"true" if verify else "false"}
                    timeout: 2
                }}
                """
            )
            log = work / f"nats{i}.log"
            with log.open("ab") as out:
                args = ["nats-server", "-c", str(conf)]
                process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
            started.append(Server(port, process))
            _listening(port, process, log)
        yield started
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.terminate()
                server.process.wait(10)
