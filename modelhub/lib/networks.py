"""Which addresses a server URL may reach (MODELHUB_TRITON_ALLOWED_NETWORKS).

Checked when a connection is made, against every address the host name resolves to at
that moment: a check when the URL is saved would let a DNS record changed later (or a
name that resolves to several addresses) reach anything.
"""

import ipaddress
import socket
from collections.abc import Callable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SETTING = "MODELHUB_TRITON_ALLOWED_NETWORKS"


class AddressNotAllowed(OSError):
    """A host resolved to an address outside the allowed networks; no connection was made."""


def is_allowed(address: str, networks: Sequence[Network]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 scope ("fe80::1%eth0") is not part of it
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1
    return any(ip in network for network in networks)


def check_resolved(host: str, infos: Sequence[tuple], networks: Sequence[Network]) -> list[tuple]:
    """`infos` (getaddrinfo's answer for `host`) when every address is in `networks`;
    else AddressNotAllowed naming the address and the setting. Empty `networks`: all pass."""
    if networks:
        for info in infos:
            address = info[4][0]
            if not is_allowed(address, networks):
                shown = ", ".join(str(n) for n in networks)
                what = address if host == address else f"{host} resolves to {address}, which"
                raise AddressNotAllowed(f"{what} is not in {SETTING} ({shown}): no connection was made")
    return list(infos)


def resolve_allowed(
    host: str, port: int, networks: Sequence[Network], resolve: Callable = socket.getaddrinfo
) -> list[tuple]:
    """getaddrinfo(host, port) for a TCP connection, checked by check_resolved."""
    return check_resolved(host, resolve(host, port, 0, socket.SOCK_STREAM), networks)
