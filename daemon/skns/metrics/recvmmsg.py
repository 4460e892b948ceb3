"""Batched datagram receive with recvmmsg(2), which Python's socket module lacks.

Each datagram is scattered over two buffers: its first ``slot - 2`` bytes into
a slot of a dense region, the rest (if any) into an overflow buffer. The dense
region is laid out so that, after a receive, it already reads as one JSON
array (see :mod:`.batch`):

    [ <datagram 0><"\\n" padding>, <datagram 1><"\\n" padding>, ... ]

The parser skips the padding byte by byte, so the slot is as small as the
datagrams allow: 64 bytes while every datagram fits in 62, 128 bytes (up to
126) once one does not. A datagram longer than its slot is still received
whole (its tail in the overflow buffer); its batch only leaves the fast path.

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

# Bytes per dense slot: slot - 2 of datagram, at least one "\n", then ",". Small first.
SLOTS = (64, 128)
# The longest datagram any layout holds in its dense slot.
DENSE = SLOTS[-1] - 2
# Batches in a row whose datagrams all fit the smaller slot before the receiver goes back
# to it. A batch with a datagram too long for its slot leaves the fast path (about 1 us more
# per datagram, the whole batch), while the larger slot costs about 0.1 us more per datagram:
# so a long datagram every few dozen batches keeps the larger slot rather than flip each time.
_SHRINK_AFTER = 64
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
_ZEROS = bytes(MAX_BATCH)


class _Layout:
    """One slot size: its padding template and the headers that scatter into it."""

    def __init__(self, slot: int, batch: int, size: int, dense_at: int, over_at: int) -> None:
        self.slot = slot
        self.dense = slot - 2
        self.spill = size - self.dense
        # "[" then the slots; the template restores the padding after each batch.
        self.template = b"[" + (b"\n" * (slot - 1) + b",") * batch
        # Low length bytes a datagram that fits this slot may have; translate() deletes them.
        self.fitting = bytes(range(self.dense + 1))
        self.iov = (IOVec * (2 * batch))()
        self.hdrs = (MMsgHdr * batch)()
        for i in range(batch):
            first, rest = self.iov[2 * i], self.iov[2 * i + 1]
            first.iov_base, first.iov_len = dense_at + 1 + i * slot, self.dense
            rest.iov_base, rest.iov_len = over_at + i * self.spill, self.spill
            self.hdrs[i].msg_hdr.msg_iov = ctypes.pointer(first)
            self.hdrs[i].msg_hdr.msg_iovlen = 2
        self.hdr_ptr = ctypes.addressof(self.hdrs)
        self.hdr_bytes = memoryview(self.hdrs).cast("B")
        self.words = self.hdr_bytes.cast("I")

    def fits(self, start: int, stop: int, limit: bytes) -> bool:
        """Are datagrams [start, stop) received with this layout all as short as the
        lengths in ``limit`` (the low bytes allowed)? Byte-strided slices of one copy
        of the headers: C-level passes, where ``max()`` would make an int per datagram."""
        raw = self.hdr_bytes[start * _HDR_SIZE : stop * _HDR_SIZE].tobytes()
        return raw[_LEN_HIGH::_HDR_SIZE] == _ZEROS[: stop - start] and not raw[
            _LEN_LOW::_HDR_SIZE
        ].translate(None, limit)


class BatchReceiver:
    """Receives up to ``batch`` datagrams of up to ``size`` bytes each per call.

    ``slots`` are the slot sizes it may use, smallest first (tests pin one)."""

    def __init__(
        self, sock: socket.socket, batch: int, size: int, slots: tuple[int, ...] = SLOTS
    ) -> None:
        if size < max(slots):
            raise ValueError(f"size must be at least {max(slots)}")
        if not 1 <= batch <= MAX_BATCH:
            raise ValueError(f"batch must be within 1..{MAX_BATCH}")
        self._fd = sock.fileno()
        self.batch = batch
        self.size = size
        self.dense = bytearray(1 + batch * max(slots))
        self.dense_view = memoryview(self.dense)
        self.overflow = bytearray(batch * (size - min(slots) + 2))
        dense_at = ctypes.addressof((ctypes.c_char * len(self.dense)).from_buffer(self.dense))
        over_at = ctypes.addressof((ctypes.c_char * len(self.overflow)).from_buffer(self.overflow))
        self._layouts = [_Layout(s, batch, size, dense_at, over_at) for s in sorted(slots)]
        self._short_run = 0
        self._use(self._layouts[0])

    def _use(self, layout: _Layout) -> None:
        self.layout = layout
        self.slot = layout.slot
        self.template = layout.template
        self.dense[: len(layout.template)] = layout.template

    def recv(self) -> int:
        """Take what is queued, without blocking: the number of datagrams (0 if none).

        Call :meth:`reset` with that number once the datagrams are consumed."""
        n = _recvmmsg(self._fd, self.layout.hdr_ptr, self.batch, MSG_DONTWAIT, None)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):
            return 0
        raise OSError(err, os.strerror(err))

    def all_dense(self, start: int, stop: int) -> bool:
        """Is each of datagrams [start, stop) whole within its dense slot? A truncated
        datagram is not: its length is ``size``."""
        return self.layout.fits(start, stop, self.layout.fitting)

    def length(self, i: int) -> int:
        return self.layout.words[i * _STRIDE + _LEN_AT]

    def truncated(self, i: int) -> bool:
        return bool(self.layout.words[i * _STRIDE + _FLAGS_AT] & MSG_TRUNC)

    def datagram(self, i: int) -> bytes:
        """Datagram i as received (cut at ``size`` if it was truncated)."""
        layout = self.layout
        n = min(self.length(i), self.size)
        at = 1 + i * layout.slot
        if n <= layout.dense:
            return bytes(self.dense_view[at : at + n])
        spill = i * layout.spill
        return bytes(self.dense_view[at : at + layout.dense]) + bytes(
            self.overflow[spill : spill + n - layout.dense]
        )

    def reset(self, n: int) -> None:
        """Restore the padding of the first n slots for the next receive, and pick the
        next batch's slot size: the larger one as soon as a datagram did not fit, the
        smaller one after ``_SHRINK_AFTER`` batches in a row that would have fitted it."""
        layout = self.layout
        end = 1 + n * layout.slot
        self.dense[1:end] = layout.template[1:end]
        at = self._layouts.index(layout)
        if not layout.fits(0, n, layout.fitting):
            if at + 1 < len(self._layouts):
                self._short_run = 0
                self._use(self._layouts[at + 1])
        elif at and layout.fits(0, n, self._layouts[at - 1].fitting):
            self._short_run += 1
            if self._short_run >= _SHRINK_AFTER:
                self._short_run = 0
                self._use(self._layouts[at - 1])
        else:
            self._short_run = 0
