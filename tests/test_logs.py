import json
import logging
import os
import subprocess
import sys

import pytest
from systemd import journal

from skns import logs


def test_stderr_when_not_under_systemd(monkeypatch, capfd):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.setup("info", "udp-worker", 3)
    logging.getLogger("skns.test").warning("hello")
    err = capfd.readouterr().err
    assert f"[udp-worker 3 {os.getpid()}] skns.test: hello" in err
    logs.setup("info", "test")


def test_journal_when_stderr_is_the_journal_stream(monkeypatch):
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logs.under_systemd()
    logs.setup("info", "relay", 0)
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, journal.JournalHandler)
    logs.setup("info", "test")


# Runs in a private mount namespace (a tmpfs over /run): a datagram socket of our own where
# sd_journal_send(3) sends, /run/systemd/journal/socket, so that what the real libsystemd
# writes is read back.
JOURNAL_CATCHER = r"""
import json, logging, os, socket, struct, subprocess
subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run"], check=True)
os.makedirs("/run/systemd/journal")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind("/run/systemd/journal/socket")
st = os.fstat(2)
os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
from skns import logs
for role, index in (("supervisor", None), ("udp-worker", 3)):
    logs.setup("info", role, index)
    logging.getLogger("skns.metrics").warning("hello from %s", role)
    data = sock.recv(65536)
    fields = {}
    while data:  # the native protocol: KEY=value\n, or KEY\n<le64 size>value\n
        head, sep, rest = data.partition(b"\n")
        if b"=" in head:
            key, _, value = head.partition(b"=")
            data = rest
        else:
            (size,) = struct.unpack("<Q", rest[:8])
            key, value, data = head, rest[8 : 8 + size], rest[9 + size :]
        fields[key.decode()] = value.decode()
    print(json.dumps(fields))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace")
def test_role_reaches_journald_as_a_field():
    """``journalctl ROLE=udp-worker`` needs a field named ROLE in what libsystemd sends."""
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", JOURNAL_CATCHER],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    supervisor, worker = (json.loads(line) for line in proc.stdout.splitlines())
    assert supervisor["ROLE"] == "supervisor" and "ROLE_INDEX" not in supervisor
    assert supervisor["MESSAGE"] == "supervisor: hello from supervisor"
    assert (worker["ROLE"], worker["ROLE_INDEX"]) == ("udp-worker", "3")
    assert worker["MESSAGE"] == "udp-worker 3: hello from udp-worker"
    assert worker["SYSLOG_IDENTIFIER"] == "skns-metrics"
    assert worker["PRIORITY"] == "4"


def test_journal_stream_of_another_file_is_not_ours(monkeypatch):
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not logs.under_systemd()
    monkeypatch.setenv("JOURNAL_STREAM", "garbage")
    assert not logs.under_systemd()


def test_a_child_process_logs_to_stderr_by_default():
    code = (
        "from skns import logs; import logging; "
        "logs.setup('info', 'x'); logging.getLogger('a').info('b')"
    )
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "INFO" in res.stderr and "a: b" in res.stderr
