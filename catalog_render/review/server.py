"""Run the review page with uvicorn: ``catalog-render review OUTPUT_URI``.

The server listens on 127.0.0.1 by default. Any other address (a LAN address, ``0.0.0.0``, a
host name) is refused unless ``allow_remote`` is set, and then a warning is printed: anyone who
can reach the port can store verdicts under the reviewer's name (the page has no login). With a
non-loopback address the ``Host`` header may also be the machine's name and addresses.
"""

from __future__ import annotations

import getpass
import ipaddress
import socket
import sys

import uvicorn

from catalog_render.errors import ConfigError
from catalog_render.review.app import LOOPBACK_HOSTS, create_app

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def default_reviewer() -> str:
    """The OS user name (``getpass.getuser()``); raises ConfigError when there is none."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = ""
    if not name:
        raise ConfigError("no OS user name to store with verdicts: pass --reviewer NAME")
    return name


def allowed_hosts(host: str) -> list[str]:
    """``Host`` header values the app accepts when bound to ``host``: loopback names, plus for a
    non-loopback bind the address itself and the machine's host name, FQDN and addresses."""
    names = list(LOOPBACK_HOSTS)
    if not is_loopback(host):
        extra = {host} if host not in ("0.0.0.0", "::") else set()
        hostname = socket.gethostname()
        extra |= {hostname, socket.getfqdn()}
        try:
            extra |= {ai[4][0] for ai in socket.getaddrinfo(hostname, None)}
        except OSError:
            pass
        names += sorted(extra - set(names))
    return names


def make_server(output_uri: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, reviewer: str | None = None,
                allow_remote: bool = False, warn=None) -> uvicorn.Server:
    """A uvicorn server (not started) for the review app of ``output_uri``.

    Raises ConfigError for a non-loopback ``host`` without ``allow_remote``, a port outside
    0..65535 (0: any free port), an address and port that cannot be bound (in use, not this
    machine's) or an empty reviewer. ``warn`` (callable taking a str, default:
    print to stderr) receives the warning for a non-loopback bind."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port: {port} is not a TCP port (0..65535)")
    if not is_loopback(host):
        if not allow_remote:
            raise ConfigError(f"--host {host}: the review page listens on loopback (127.0.0.1) only unless --allow-remote is given "
                              "(it has no login: anyone who reaches the port can store verdicts)")
        (warn or (lambda m: print(m, file=sys.stderr)))(
            f"warning: the review page listens on {host}:{port}, reachable from other machines; it has no login, so anyone who "
            "reaches this port can approve or reject renders under the reviewer's name")
    # bind once now: a port in use is a one-line error before anything is printed, and port 0
    # becomes the free port the URL names (uvicorn binds it again when the server starts)
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind((host.strip("[]"), port))
            port = sock.getsockname()[1]
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    name = (reviewer if reviewer is not None else default_reviewer()).strip()
    if not name:
        raise ConfigError("--reviewer: empty name")
    app = create_app(output_uri, name, allowed_hosts=allowed_hosts(host))
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", server_header=False, date_header=False,
                            proxy_headers=False, access_log=False, lifespan="on")
    return uvicorn.Server(config)
