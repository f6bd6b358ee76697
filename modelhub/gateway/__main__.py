"""Run the inference gateway: python -m modelhub.gateway [--host H] [--port P] [--workers N].

ModelHub's own HTTP/1.1 server (server.py) on uvloop, nothing logged per request.
SIGTERM or SIGINT stops it gracefully: no new connections, the requests under way
answered (up to 10 s), then the background threads stopped. With --workers N, N
processes share the port (SO_REUSEPORT), each with its own table, token cache and pools.
"""

import argparse
import os
import signal
import subprocess
import sys

import django


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
    django.setup()  # a bad setting stops here, naming the variable
    from django.conf import settings

    parser = argparse.ArgumentParser(description="ModelHub's inference gateway (Triton's HTTP protocol)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.GATEWAY_PORT, help="MODELHUB_GATEWAY_PORT (8001)")
    parser.add_argument("--workers", type=int, default=1, help="processes; each keeps its own table and pools")
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # one of --workers N
    args = parser.parse_args()
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.workers == 1:
        sys.exit(serve(args.host, args.port, reuse_port=args.reuse_port))
    sys.exit(supervise(args.host, args.port, args.workers))


def serve(host: str, port: int, reuse_port: bool) -> int:
    """One gateway process, until SIGTERM or SIGINT."""
    import asyncio

    import uvloop
    from django.conf import settings

    from .app import create_app
    from .server import Server

    server = Server(create_app(), host, port, settings.GATEWAY_MAX_BODY_BYTES, reuse_port=reuse_port)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop)
        await server.serve()

    try:
        uvloop.run(run())
    except OSError as exc:
        print(f"the gateway cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0


def supervise(host: str, port: int, workers: int) -> int:
    """N processes on one port; a signal to this one is passed on to them."""
    command = [sys.executable, "-m", "modelhub.gateway", "--host", host, "--port", str(port), "--reuse-port"]
    processes = [subprocess.Popen(command) for _ in range(workers)]  # a fresh interpreter each

    def forward(signum, _frame) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(process.wait() for process in processes)


if __name__ == "__main__":
    main()
