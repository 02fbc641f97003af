"""Choosing the bind address: a private LAN address, else 127.0.0.1; never 0.0.0.0 by default."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

_SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address
_SIOCGIFFLAGS = 0x8913  # Linux: an interface's flags
IFF_UP, IFF_LOOPBACK, IFF_MULTICAST = 0x1, 0x8, 0x1000

_PRIVATE = [ipaddress.ip_network(n) for n in
            ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]


def is_private_lan(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in _PRIVATE)


def interfaces() -> dict[str, tuple[str, int]]:
    """Interface name -> (its IPv4 address, its flags), for interfaces with an IPv4 address
    (Linux ioctl; empty elsewhere)."""
    found: dict[str, tuple[str, int]] = {}
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return found
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for name in names:
            request = struct.pack("256s", name[:15].encode())
            try:
                packed = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, request)
                flags = struct.unpack_from("H", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS,
                                                            request), 16)[0]
            except OSError:
                continue  # no IPv4 address on this interface
            found[name] = (socket.inet_ntoa(packed[20:24]), flags)
    return found


def _interface_addresses() -> list[str]:
    return [address for address, _ in interfaces().values()]


def _candidate_addresses() -> list[str]:
    """Addresses to consider, best first: the default route's source, then every interface."""
    found: list[str] = []
    try:
        # A UDP "connect" sends no packet; it only asks the kernel which source
        # address it would use for a private-range destination.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            found.append(s.getsockname()[0])
    except OSError:
        pass
    found += _interface_addresses()
    try:
        infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
        found.extend(str(info[4][0]) for info in infos)
    except OSError:
        pass
    return found


def choose_bind_address(setting: str) -> str:
    """``auto`` -> the first private LAN address of this host, else 127.0.0.1."""
    if setting != "auto":
        return setting
    for address in _candidate_addresses():
        if is_private_lan(address):
            return address
    return "127.0.0.1"


def loopback_fix(setting: str) -> str:
    """What to change when a node listens on loopback (``setting``: its [node] bind): the
    one wording of the start-up report and of doctor."""
    if setting == "auto":
        return ("this machine has no address in 10/8, 172.16/12, 192.168/16 or 100.64/10: "
                "set [node] bind to its LAN address")
    return ("to join other machines: --bind auto, or [node] bind = \"auto\" or this "
            "machine's LAN address")
