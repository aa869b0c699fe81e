"""A test double for a spawned service: it listens, prints, exits, ignores SIGTERM or forks on demand.

Used only by our own tests of the executor; never by the suites.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0, help="listen on 127.0.0.1:PORT after --delay")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before listening")
    parser.add_argument("--banner", default="", help="line to print once listening")
    parser.add_argument("--exit-code", type=int, default=None, help="print a message and exit with this code")
    parser.add_argument("--ignore-sigterm", action="store_true")
    parser.add_argument("--fork", action="store_true",
                        help="start a worker in our process group (as vLLM or a shell wrapper does) and print its pid")
    args = parser.parse_args()
    # A shell starts background jobs with SIGINT ignored, and Python then installs no handler:
    # the tests that stop us with SIGINT must not depend on how pytest was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # inherited by the worker too
    print("fake service starting", flush=True)
    if args.fork:
        # The worker outlives us unless the whole group is signalled; it never reads the pipe we hold.
        worker = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.2)"],
                                  stdin=subprocess.DEVNULL)
        print(f"worker pid {worker.pid}", flush=True)
    if args.exit_code is not None:
        print(f"fatal: giving up with code {args.exit_code}", flush=True)
        return args.exit_code
    time.sleep(args.delay)
    server = None
    if args.port:
        server = socket.create_server(("127.0.0.1", args.port))
    if args.banner:
        print(args.banner, flush=True)
    while True:
        if server is not None:
            server.settimeout(0.2)
            try:
                conn, _ = server.accept()
                conn.close()
            except TimeoutError:
                pass
        else:
            time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
