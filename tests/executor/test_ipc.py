import pytest

from skns.errors import ProtocolError
from skns.executor import ipc


def test_frames_survive_any_split() -> None:
    stream = ipc.frame(b"one") + ipc.ack_frame(42) + ipc.frame(b"") + ipc.frame(b"x" * 1000)
    for step in (1, 3, 7, len(stream)):
        decoder = ipc.FrameDecoder()
        frames: list[bytes] = []
        for i in range(0, len(stream), step):
            frames += decoder.feed(stream[i : i + step])
        assert frames[0] == b"one"
        assert ipc.parse_ack(frames[1]) == 42
        assert frames[2:] == [b"", b"x" * 1000]


def test_bad_ack_and_oversized_frame() -> None:
    with pytest.raises(ProtocolError):
        ipc.parse_ack(b"123")
    with pytest.raises(ProtocolError):
        ipc.FrameDecoder().feed(ipc.LENGTH.pack(ipc.MAX_FRAME + 1))
