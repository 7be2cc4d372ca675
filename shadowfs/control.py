"""The control channel: HTTP/1.1 with JSON bodies on a Unix socket in state_dir (mode 0600).

The daemon serves it on the trio thread (handlers only read in-memory state or await the data
path); the CLI and tests are clients. Later issues add routes; each route is a small async
function taking the parsed JSON body and returning a JSON-able dict, or raising ``ApiError``
for a bad request (a clear message, a 4xx status, nothing changed).

A registry under /run/shadowfs (or $TMPDIR when /run is not writable) maps a mountpoint to its
socket, so that ``shadowfs status MOUNTPOINT`` finds the daemon without touching the mount.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

SOCKET_NAME = "control.sock"
log = logging.getLogger(__name__)
MAX_BODY = 1 << 20
SUN_PATH_MAX = 107  # a Unix socket's address holds 108 bytes, the terminating NUL included


@contextlib.contextmanager
def _addressable(path: Path) -> Iterator[str]:
    """An address for the socket at ``path`` that fits in sun_path: the path itself, or, for
    a longer one (a state_dir deep in a tree), the path through its directory's fd,
    /proc/self/fd/N/NAME, which bind and connect resolve like any path."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


Route = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DaemonUnreachable(Exception):
    """No daemon answered on the socket."""


# ---------------------------------------------------------------- registry


def registry_dir() -> Path:
    base = Path("/run/shadowfs")
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.access(base, os.W_OK):
            return base
    except OSError:
        pass
    fallback = Path(os.environ.get("TMPDIR", "/tmp")) / f"shadowfs-{os.getuid()}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    return fallback


def registry_entry(mountpoint: Path) -> Path:
    # abspath, not resolve(): resolving would stat the mountpoint, i.e. ask the daemon itself,
    # which may be the one not answering.
    key = hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:24]
    return registry_dir() / f"{key}.json"


@dataclass(frozen=True)
class MountRecord:
    mountpoint: str
    socket: str
    pid: int
    state_dir: str
    log: str

    def write(self) -> None:
        path = registry_entry(Path(self.mountpoint))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__))
        os.replace(tmp, path)

    @staticmethod
    def find(mountpoint: Path) -> MountRecord | None:
        try:
            data = json.loads(registry_entry(mountpoint).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return MountRecord(**data)

    def remove(self) -> None:
        try:
            registry_entry(Path(self.mountpoint)).unlink()
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------- server


class ControlServer:
    def __init__(self, socket_path: Path, routes: dict[tuple[str, str], Route]) -> None:
        self.socket_path = Path(socket_path)
        self.routes = routes

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self.socket_path.unlink()
        except FileNotFoundError:
            pass
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket is created 0600
        try:
            with _addressable(self.socket_path) as address:
                await sock.bind(address)
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        sock.listen(16)
        listener = trio.SocketListener(sock)
        task_status.started()
        try:
            await trio.serve_listeners(self._handle, [listener])
        finally:
            try:
                self.socket_path.unlink()
            except FileNotFoundError:
                pass

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                method, path, body = await _read_request(stream)
            except (ValueError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                await _respond(stream, 400, {"error": f"bad request: {exc}"})
                return
            route = self.routes.get((method, path))
            if route is None:
                known = sorted(f"{m} {p}" for m, p in self.routes)
                await _respond(stream, 404, {"error": f"no route {method} {path}", "routes": known})
                return
            try:
                payload = json.loads(body) if body else {}
                if not isinstance(payload, dict):
                    raise ApiError(400, "the request body must be a JSON object")
                result = await route(payload)
            except json.JSONDecodeError as exc:
                await _respond(stream, 400, {"error": f"body is not JSON: {exc}"})
            except ApiError as exc:
                await _respond(stream, exc.status, {"error": exc.message})
            except Exception as exc:  # a failing route must not take the daemon down
                log.exception("control route %s %s failed", method, path)
                await _respond(stream, 500, {"error": f"{method} {path} failed: {exc}"})
            else:
                await _respond(stream, 200, result)


async def _read_request(stream: trio.SocketStream) -> tuple[str, str, bytes]:
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ValueError("connection closed before the headers ended")
        buf += chunk
        if len(buf) > 65536:
            raise ValueError("headers too long")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split()
    if len(parts) != 3:
        raise ValueError(f"request line {lines[0]!r}")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length < 0 or length > MAX_BODY:
        raise ValueError(f"body of {length} bytes")
    while len(rest) < length:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise ValueError("connection closed inside the body")
        rest += chunk
    return parts[0].upper(), parts[1], rest[:length]


async def _respond(stream: trio.SocketStream, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, indent=1, default=str).encode()
    reason = http.client.responses.get(status, "")
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        await stream.send_all(head + body)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


# ---------------------------------------------------------------- client


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            with _addressable(Path(self._path)) as address:
                sock.connect(address)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def call(
    socket_path: str | Path,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, Any]]:
    """One request; DaemonUnreachable when nothing answers."""
    conn = _UnixConnection(str(socket_path), timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read() or b"{}")
        return response.status, payload
    except (FileNotFoundError, ConnectionRefusedError, TimeoutError, OSError) as exc:
        raise DaemonUnreachable(f"no shadowfs daemon answers on {socket_path}: {exc}") from exc
    finally:
        conn.close()
