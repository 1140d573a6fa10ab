"""Machines on one box: network namespaces on a bridge of the test's own (Linux, root).

:class:`HostNet` creates ``n`` namespaces, each with one veth pair into a bridge in the root
namespace, on a private /24 (``10.213.X.0/24``, X picked among the subnets this machine has
no route for): host ``i`` (1-based) is ``10.213.X.(10 + i)``, the bridge (the root
namespace: the test's own clients) ``10.213.X.1``. A process started through
:meth:`HostNet.wrap` runs in host ``i``'s namespace: it sees only its own address and
reaches the others through the bridge, as a machine reaches its peers through a switch.

:meth:`HostNet.cut` takes host ``i``'s link down (the cable pulled: nothing in or out, no
reset either, TCP connections just stall); :meth:`HostNet.heal` puts it back. Everything is
removed in :meth:`HostNet.close` (the namespaces with their veth ends, then the bridge),
which the context manager runs in every case; namespaces left behind by a test process that
was killed are removed by the next one (their names carry the creator's pid).

Why namespaces rather than packet filter rules: the cluster profile's brokers connect to
each other from the loopback's first address whatever they listen on, so rules on a
broker's 127.0.0.x address cannot tell its outgoing connections from its peers'; a
namespace cuts exactly one machine, both ways. (This box also has no iptables or nft.)
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence

PREFIX = "qilu-"  # namespace names: qilu-<pid>-<tag>-<i>
NET = "10.213"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, check=check, timeout=30
    )  # fmt: skip


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale() -> list[str]:
    """Delete namespaces of ours whose creating process is gone (a killed test run)."""
    gone: list[str] = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        ours = name.startswith(PREFIX) and len(parts) == 4 and parts[1].isdigit()
        if ours and not _pid_alive(int(parts[1])):
            ip("netns", "del", name, check=False)
            gone.append(name)
    return gone


def _free_subnet() -> int:
    """A third octet X with no route to 10.213.X.0/24 on this machine."""
    routes = ip("-4", "route", "show", "table", "all").stdout
    used: set[int] = set()
    for word in routes.split():
        with contextlib.suppress(ValueError):
            net = ipaddress.ip_network(word, strict=False)
            if str(net.network_address).startswith(f"{NET}."):
                used.add(int(str(net.network_address).split(".")[2]))
    for x in range(int(uuid.uuid4().int % 200) + 20, 255):
        if x not in used:
            return x
    raise RuntimeError(f"no free {NET}.X.0/24 subnet")


class HostNet:
    """``n`` namespaces ("hosts") on a bridge; see the module docstring."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.tag = uuid.uuid4().hex[:5]
        self.subnet = _free_subnet()
        self.bridge = f"qb{self.tag}"
        self.gateway = f"{NET}.{self.subnet}.1"
        self.created: list[str] = []
        self.bridge_made = False

    def ns(self, i: int) -> str:
        return f"{PREFIX}{os.getpid()}-{self.tag}-{i}"

    def veth(self, i: int) -> str:
        return f"qv{self.tag}{i}"

    def address(self, i: int) -> str:
        return f"{NET}.{self.subnet}.{10 + i}"

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(self.address(i) for i in range(1, self.n + 1))

    def open(self) -> HostNet:
        reap_stale()
        ip("link", "add", self.bridge, "type", "bridge")
        self.bridge_made = True
        ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(1, self.n + 1):
            ns, root_end, ns_end = self.ns(i), self.veth(i), f"qn{self.tag}{i}"
            ip("netns", "add", ns)
            self.created.append(ns)
            ip("link", "add", root_end, "type", "veth", "peer", "name", ns_end)
            ip("link", "set", ns_end, "netns", ns)
            ip("link", "set", root_end, "master", self.bridge)
            ip("link", "set", root_end, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "link", "set", ns_end, "name", "eth0")
            ip("-n", ns, "addr", "add", f"{self.address(i)}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def wrap(self, i: int, argv: Sequence[str]) -> list[str]:
        """``argv`` run in host ``i``'s namespace."""
        return ["ip", "netns", "exec", self.ns(i), *argv]

    def cut(self, i: int) -> None:
        """Host ``i`` off the network (both ways) until :meth:`heal`."""
        ip("link", "set", self.veth(i), "down")

    def heal(self, i: int) -> None:
        ip("link", "set", self.veth(i), "up")

    def close(self) -> None:
        for i in range(1, self.n + 1):  # the pair goes at once (a namespace's, lazily)
            ip("link", "del", self.veth(i), check=False)
        for ns in self.created:
            ip("netns", "del", ns, check=False)
        self.created.clear()
        if self.bridge_made:
            ip("link", "del", self.bridge, check=False)
            self.bridge_made = False

    def leftovers(self) -> list[str]:
        """Anything of ours still there (for the tests' clean-up check)."""
        names = ip("netns", "list", check=False).stdout
        links = ip("-o", "link", "show", check=False).stdout
        out = [ns for ns in (self.ns(i) for i in range(1, self.n + 1)) if ns in names]
        out += [
            d for d in (self.bridge, *(self.veth(i) for i in range(1, self.n + 1))) if d in links
        ]
        return out


@contextlib.contextmanager
def host_net(n: int) -> Iterator[HostNet]:
    """:class:`HostNet` opened, and closed in every case."""
    net = HostNet(n)
    try:
        yield net.open()
    finally:
        net.close()
