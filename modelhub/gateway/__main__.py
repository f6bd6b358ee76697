"""Run the inference gateway: python -m modelhub.gateway [--host H] [--port P] [--workers N].

uvicorn with uvloop and httptools, no access log (nothing logged per request).
"""

import argparse
import os

import django
import uvicorn


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "modelhub.settings")
    django.setup()  # a bad setting stops here, naming the variable
    from django.conf import settings

    parser = argparse.ArgumentParser(description="ModelHub's inference gateway (Triton's HTTP protocol)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=settings.GATEWAY_PORT, help="MODELHUB_GATEWAY_PORT (8001)")
    parser.add_argument("--workers", type=int, default=1, help="processes; each keeps its own table and pools")
    args = parser.parse_args()
    uvicorn.run(
        "modelhub.gateway.asgi:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        # Triton's headers only: no Server/Date of uvicorn's own, no proxy-header rewriting.
        server_header=False,
        date_header=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
