"""A store-node process: one real ``MooncakeDistributedStore`` served over a Unix socket.

Every Mooncake client binds its Transfer Engine ports on all interfaces, so store
clients cannot live inside pytest when the cluster sits in a private network
namespace. Each store node (and the pure client the suites use, which mounts no
memory) is therefore this process, started in the cluster's namespace. Unix
sockets cross network namespaces, so pytest drives it from the root namespace.

Requests are ``(op, args, kwargs)``; ``op`` is a public store method or one of the
agent operations in ``agent_ops.OPS``. Replies are ``("ok", value)`` or ``("error", text)``.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from multiprocessing.connection import Connection, Listener
from typing import Any

from pytest_mooncake.cluster.agent_ops import OPS, replicate_config

READY_BANNER = "pytest-mooncake agent ready"
# Not `python -m`: the package imports this module first, and runpy warns about that.
ENTRY = "import sys; from pytest_mooncake.cluster.agent import main; sys.exit(main(sys.argv[1:]))"
AUTHKEY_ENV = "PYTEST_MOONCAKE_AGENT_KEY"
_FORBIDDEN = {"setup", "setup_dummy", "close", "init_all"}
CLOSE_TIMEOUT_S = 2  # whole seconds: signal.alarm()

def _dispatch(store: Any, request: tuple[str, tuple[Any, ...], dict[str, Any]]) -> tuple[str, Any]:
    name, args, kwargs = request
    if name in OPS:
        return "ok", OPS[name](store, *args, **kwargs)
    if name.startswith("_") or name in _FORBIDDEN or not hasattr(store, name):
        return "error", f"unknown operation {name!r}"
    if isinstance(kwargs.get("config"), dict):
        kwargs = {**kwargs, "config": replicate_config(kwargs["config"])}
    return "ok", getattr(store, name)(*args, **kwargs)


def _serve(conn: Connection, store: Any) -> None:
    with conn:
        while True:
            try:
                request = conn.recv()
            except (EOFError, OSError):
                return
            try:
                reply = _dispatch(store, request)
            except Exception as exc:  # every failure goes back to the caller, with its type
                reply = ("error", f"{type(exc).__name__}: {exc}")
            try:
                conn.send(reply)
            except Exception as exc:
                conn.send(("error", f"reply of {request[0]!r} cannot be sent: {exc}"))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pytest-mooncake agent")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--local-hostname", required=True)
    parser.add_argument("--metadata-server", required=True)
    parser.add_argument("--master", required=True)
    parser.add_argument("--segment-size", type=int, required=True)
    parser.add_argument("--buffer-size", type=int, required=True)
    parser.add_argument("--protocol", default="tcp")
    parser.add_argument("--rdma-devices", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    from mooncake.store import MooncakeDistributedStore

    # Mooncake's threads inherit this mask: with SIGTERM blocked in all of them, the kernel
    # delivers it to the main thread, whose accept() it interrupts so the handler runs now.
    # Delivered to one of Mooncake's threads it would wait for the next connection.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    store = MooncakeDistributedStore()
    started = time.monotonic()
    code = store.setup(
        args.local_hostname,
        args.metadata_server,
        args.segment_size,
        args.buffer_size,
        args.protocol,
        args.rdma_devices,
        args.master,
    )
    if code != 0:
        print(f"store.setup() returned {code}; master {args.master}, metadata {args.metadata_server}", flush=True)
        return 3

    def shut_down(signum: int, frame: object) -> None:
        # Unmount cleanly so the master drops this segment now, not after client_ttl. close()
        # holds the GIL while it waits, and when the master it knew is gone (an HA leader
        # killed) it waits on RPC timeouts: SIGALRM's default action, which needs no Python,
        # ends the process after CLOSE_TIMEOUT_S, when the unmount could not reach anyone anyway.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        signal.alarm(CLOSE_TIMEOUT_S)
        store.close()
        os._exit(0)

    signal.signal(signal.SIGTERM, shut_down)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    authkey = bytes.fromhex(os.environ.pop(AUTHKEY_ENV))
    listener = Listener(args.socket, family="AF_UNIX", authkey=authkey)
    print(
        f"{READY_BANNER} segment={store.get_hostname()} "
        f"setup_s={time.monotonic() - started:.3f} pid={os.getpid()}",
        flush=True,
    )
    while True:
        try:
            conn = listener.accept()
        except Exception as exc:  # a client that fails authentication must not stop the node
            print(f"rejected a connection: {exc}", flush=True)
            continue
        threading.Thread(target=_serve, args=(conn, store), daemon=True).start()

