"""Batched datagram receive with recvmmsg(2), which Python's socket module lacks.

One ctypes call fills up to ``batch`` buffers; the per-datagram lengths and
flags are then read through a flat uint32 view of the mmsghdr array, so the
hot loop touches no ctypes objects.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20


class _IOVec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _MsgHdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _MMsgHdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint32))


_libc = ctypes.CDLL(None, use_errno=True)
_recvmmsg = _libc.recvmmsg
_recvmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
_recvmmsg.restype = ctypes.c_int

# Where msg_len and msg_flags sit, counted in uint32 units from each header's start.
_STRIDE = ctypes.sizeof(_MMsgHdr) // 4
_LEN_AT = _MMsgHdr.msg_len.offset // 4
_FLAGS_AT = (_MMsgHdr.msg_hdr.offset + _MsgHdr.msg_flags.offset) // 4


class BatchReceiver:
    """Receives up to ``batch`` datagrams of up to ``size`` bytes each per call.

    After ``recv()`` returns n, datagram i is ``view[i * size : i * size + length(i)]``;
    ``truncated(i)`` tells whether it was longer than ``size``.
    """

    def __init__(self, sock: socket.socket, batch: int, size: int) -> None:
        self._fd = sock.fileno()
        self.batch = batch
        self.size = size
        self._data = (ctypes.c_char * (batch * size))()
        self._iov = (_IOVec * batch)()
        self._hdrs = (_MMsgHdr * batch)()
        base = ctypes.addressof(self._data)
        for i in range(batch):
            self._iov[i].iov_base = base + i * size
            self._iov[i].iov_len = size
            self._hdrs[i].msg_hdr.msg_iov = ctypes.pointer(self._iov[i])
            self._hdrs[i].msg_hdr.msg_iovlen = 1
        self.view = memoryview(self._data).cast("B")
        self.words = memoryview(self._hdrs).cast("B").cast("I")
        self._hdr_ptr = ctypes.addressof(self._hdrs)
        self.stride = _STRIDE
        self.len_at = _LEN_AT
        self.flags_at = _FLAGS_AT

    def recv(self) -> int:
        """Take what is queued, without blocking: the number of datagrams (0 if none)."""
        n = _recvmmsg(self._fd, self._hdr_ptr, self.batch, MSG_DONTWAIT, None)
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err in (errno.EAGAIN, errno.EINTR):
            return 0
        raise OSError(err, os.strerror(err))

    def length(self, i: int) -> int:
        return self.words[i * self.stride + self.len_at]

    def truncated(self, i: int) -> bool:
        return bool(self.words[i * self.stride + self.flags_at] & MSG_TRUNC)
