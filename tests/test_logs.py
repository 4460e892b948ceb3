import logging
import os
import subprocess
import sys

from systemd import journal

from skns import logs


def test_stderr_when_not_under_systemd(monkeypatch, capfd):
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    logs.setup("info", "udp-worker 3")
    logging.getLogger("skns.test").warning("hello")
    err = capfd.readouterr().err
    assert f"[udp-worker 3 {os.getpid()}] skns.test: hello" in err


def test_journal_when_stderr_is_the_journal_stream(monkeypatch):
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    assert logs.under_systemd()
    sent = []
    logs.setup("info", "relay 0")
    (handler,) = logging.getLogger().handlers
    assert isinstance(handler, journal.JournalHandler)
    # journald is not running here (systemd is not PID 1): capture what would be sent.
    handler.send = lambda text, **fields: sent.append((text, fields))
    logging.getLogger("skns.relay").info("connected")
    message, fields = sent[-1]
    assert message == "relay 0: connected"
    assert fields["role"] == "relay 0"  # journal.send upper-cases it: ROLE=relay 0
    assert fields["PRIORITY"] == "6"
    logs.setup("info", "test")


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
