"""`unread_input`: data received but not yet read, in websockets' buffers or the socket's kernel buffer."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from gpt_trader.realtime.feed import kernel_unread, unread_input


class _Transport:
    def __init__(self, sock: socket.socket, reading: bool = True) -> None:
        self.sock, self.reading = sock, reading

    def is_closing(self) -> bool:
        return False

    def is_reading(self) -> bool:
        return self.reading

    def get_extra_info(self, name: str) -> object:
        return self.sock if name == "socket" else None


def _ws(sock: socket.socket, frames: int = 0, parsing: bytes = b"", reading: bool = True) -> SimpleNamespace:
    return SimpleNamespace(
        recv_messages=SimpleNamespace(frames=[object()] * frames),
        protocol=SimpleNamespace(reader=SimpleNamespace(buffer=bytearray(parsing))),
        transport=_Transport(sock, reading),
    )


def test_unread_input_sees_each_buffer():
    a, b = socket.socketpair()
    try:
        assert kernel_unread(b) == 0
        assert not unread_input(_ws(b))
        assert unread_input(_ws(b, frames=1))  # an assembled message waits for recv()
        assert unread_input(_ws(b, parsing=b"\x81"))  # part of a frame is being parsed
        assert unread_input(_ws(b, reading=False))  # reading paused by websockets' backpressure
        a.sendall(b"x" * 100)
        assert kernel_unread(b) == 100
        assert unread_input(_ws(b))  # bytes wait in the kernel
        b.recv(100)
        assert not unread_input(_ws(b))
    finally:
        a.close()
        b.close()
    assert kernel_unread(b) == 0  # closed: unknown, not an error
    assert not unread_input(SimpleNamespace())  # nothing to look at
