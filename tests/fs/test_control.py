"""The control channel answers bad requests with a clear error and changes nothing."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import trio

from shadowfs.control import ApiError, ControlServer, call


async def test_routes_errors_and_socket_mode(tmp_path: Path) -> None:
    calls: list[dict[str, Any]] = []

    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        calls.append(body)
        if "bad" in body:
            raise ApiError(422, "field 'bad' is not allowed")
        return {"echo": body}

    path = tmp_path / "control.sock"
    server = ControlServer(path, {("POST", "/echo"): echo})
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

        def raw(request: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(path))
                s.sendall(request)
                return s.recv(65536)

        assert await trio.to_thread.run_sync(call, path, "POST", "/echo", {"a": 1}) == (
            200,
            {"echo": {"a": 1}},
        )
        status, body = await trio.to_thread.run_sync(call, path, "GET", "/nowhere")
        assert status == 404 and "no route GET /nowhere" in body["error"]
        status, body = await trio.to_thread.run_sync(call, path, "POST", "/echo", {"bad": 1})
        assert status == 422 and "'bad'" in body["error"]
        reply = await trio.to_thread.run_sync(
            raw, b"POST /echo HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope"
        )
        assert reply.startswith(b"HTTP/1.1 400") and b"not JSON" in reply
        reply = await trio.to_thread.run_sync(
            raw, b"POST /echo HTTP/1.1\r\nContent-Length: 2\r\n\r\n[]"
        )
        assert reply.startswith(b"HTTP/1.1 400") and b"JSON object" in reply
        reply = await trio.to_thread.run_sync(raw, b"garbage\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400")
        nursery.cancel_scope.cancel()
    assert calls == [{"a": 1}, {"bad": 1}]
    assert not path.exists()


async def test_a_socket_path_longer_than_sun_path_still_serves(tmp_path: Path) -> None:
    # A state_dir deep in a tree: bind and connect go through the directory's fd.
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(os.fsencode(path)) > 108

    async def hello(body: dict[str, Any]) -> dict[str, Any]:
        return {"hello": True}

    async with trio.open_nursery() as nursery:
        await nursery.start(ControlServer(path, {("GET", "/hello"): hello}).serve)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert await trio.to_thread.run_sync(call, path, "GET", "/hello") == (200, {"hello": True})
        nursery.cancel_scope.cancel()
    assert not path.exists()
    fds = len(os.listdir("/proc/self/fd"))
    for _ in range(3):  # an unreachable daemon leaks no fd either
        try:
            call(path, "GET", "/hello", timeout=1.0)
        except Exception as exc:  # DaemonUnreachable
            assert "no shadowfs daemon answers" in str(exc)
    assert len(os.listdir("/proc/self/fd")) == fds
