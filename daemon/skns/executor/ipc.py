"""Router <-> shard framing over a unix stream socket.

Every frame is a u32 LE length and that many bytes. Router to shard: an orjson
array of events ``[seq, account_id, event_id, payload]`` in increasing seq
order (the shard journals these bytes as they are). Shard to router: a u64 LE
seq, meaning "every event up to this seq is accepted" (journaled and fsynced
when durability is on).
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import ProtocolError

LENGTH = struct.Struct("<I")
ACK = struct.Struct("<Q")
MAX_FRAME = 256 * 1024 * 1024


def frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


def ack_frame(seq: int) -> bytes:
    return LENGTH.pack(ACK.size) + ACK.pack(seq)


def parse_ack(body: bytes) -> int:
    if len(body) != ACK.size:
        raise ProtocolError(f"ack frame of {len(body)} bytes, expected {ACK.size}")
    return ACK.unpack(body)[0]


def socket_path(runtime_dir: Path, shard: int) -> Path:
    return runtime_dir / f"executor-shard-{shard}.sock"


class FrameDecoder:
    """Cuts a byte stream into frames."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        offset = 0
        size = len(buf)
        while size - offset >= LENGTH.size:
            (length,) = LENGTH.unpack_from(buf, offset)
            if length > MAX_FRAME:
                raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            end = offset + LENGTH.size + length
            if end > size:
                break
            frames.append(bytes(buf[offset + LENGTH.size : end]))
            offset = end
        if offset:
            del buf[:offset]
        return frames
