"""Batched datagram receive with recvmmsg(2), which Python's socket module lacks.

Each datagram is scattered over two buffers: its first ``SLOT - 2`` bytes into
a slot of a dense region, the rest (if any) into an overflow buffer. The dense
region is laid out so that, after a receive, it already reads as one JSON
array (see :mod:`.batch`):

    [ <datagram 0><"\\n" padding>, <datagram 1><"\\n" padding>, ... ]

Lengths and flags are read through flat views of the mmsghdr array, so the
hot loop touches no ctypes objects.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20

# Bytes per dense slot: SLOT - 2 of datagram, at least one "\n", then ",".
SLOT = 128
DENSE = SLOT - 2
# Most datagrams per call: larger batches cost less per datagram while the queue is deep.
MAX_BATCH = 1024


class IOVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint32))


libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = libc.recvmmsg
_recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
_recvmmsg.restype = ctypes.c_int

# Where msg_len and msg_flags sit, counted in uint32 units from each header's start.
_STRIDE = ctypes.sizeof(MMsgHdr) // 4
_LEN_AT = MMsgHdr.msg_len.offset // 4
_FLAGS_AT = (MMsgHdr.msg_hdr.offset + MsgHdr.msg_flags.offset) // 4
# The same in bytes: msg_len is a little-endian uint32 below 2**16 (a UDP payload's
# length fits the 16-bit IP length field), so its low two bytes say all of it.
_HDR_SIZE = _STRIDE * 4
_LEN_LOW = _LEN_AT * 4
_LEN_HIGH = _LEN_LOW + 1
# Low length bytes a datagram that fits its slot may have; translate() deletes them.
_DENSE_LOW = bytes(range(DENSE + 1))
_ZEROS = bytes(MAX_BATCH)


class BatchReceiver:
    """Receives up to ``batch`` datagrams of up to ``size`` bytes each per call."""

    def __init__(self, sock: socket.socket, batch: int, size: int) -> None:
        if size < SLOT:
            raise ValueError(f"size must be at least {SLOT}")
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be within 1..{MAX_BATCH}")
        self._fd = sock.fileno()
        self.batch = batch
        self.size = size
        spill = size - DENSE
        # "[" then the slots; the template restores the padding after each batch.
        self.template = b"[" + (b"\n" * (SLOT - 1) + b",") * batch
        self.dense = bytearray(self.template)
        self.dense_view = memoryview(self.dense)
        self.overflow = bytearray(batch * spill)
        self._spill = spill
        dense_at = ctypes.addressof((ctypes.c_char * len(self.dense)).from_buffer(self.dense))
        over_at = ctypes.addressof((ctypes.c_char * len(self.overflow)).from_buffer(self.overflow))
        self._iov = (IOVec * (2 * batch))()
        self._hdrs = (MMsgHdr * batch)()
        for i in range(batch):
            first, rest = self._iov[2 * i], self._iov[2 * i + 1]
            first.iov_base, first.iov_len = dense_at + 1 + i * SLOT, DENSE
            rest.iov_base, rest.iov_len = over_at + i * spill, spill
            self._hdrs[i].msg_hdr.msg_iov = ctypes.pointer(first)
            self._hdrs[i].msg_hdr.msg_iovlen = 2
        self._hdr_bytes = memoryview(self._hdrs).cast("B")
        self.words = self._hdr_bytes.cast("I")
        self._hdr_ptr = ctypes.addressof(self._hdrs)

    def recv(self) -> int:
        """Take what is queued, without blocking: the number of datagrams (0 if none).

        Call :meth:`reset` with that number once the datagrams are consumed."""
        n = _recvmmsg(self._fd, self._hdr_ptr, self.batch, MSG_DONTWAIT, None)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):
            return 0
        raise OSError(err, os.strerror(err))

    def all_dense(self, n: int) -> bool:
        """Is each of the first n datagrams whole within its dense slot (at most
        ``DENSE`` bytes)? A truncated datagram is not: its length is ``size``.

        Byte-strided slices of one copy of the headers: C-level passes, where
        ``max()`` over the lengths would make an int per datagram."""
        raw = self._hdr_bytes[: n * _HDR_SIZE].tobytes()
        return raw[_LEN_HIGH::_HDR_SIZE] == _ZEROS[:n] and not raw[_LEN_LOW::_HDR_SIZE].translate(
            None, _DENSE_LOW
        )

    def length(self, i: int) -> int:
        return self.words[i * _STRIDE + _LEN_AT]

    def truncated(self, i: int) -> bool:
        return bool(self.words[i * _STRIDE + _FLAGS_AT] & MSG_TRUNC)

    def datagram(self, i: int) -> bytes:
        """Datagram i as received (cut at ``size`` if it was truncated)."""
        n = min(self.length(i), self.size)
        at = 1 + i * SLOT
        if n <= DENSE:
            return bytes(self.dense_view[at : at + n])
        spill = i * self._spill
        return bytes(self.dense_view[at : at + DENSE]) + bytes(
            self.overflow[spill : spill + n - DENSE]
        )

    def reset(self, n: int) -> None:
        """Restore the padding of the first n slots for the next receive."""
        self.dense[1 : 1 + n * SLOT] = self.template[1 : 1 + n * SLOT]
