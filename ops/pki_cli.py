"""``qilu pki init|issue|show``: the platform's CA and the broker's certificate (qilu/pki.py).

Files, in ``--dir`` (default ``<state>/pki``): ``ca.key`` (0600) and ``ca.crt`` (what every
agent gets as ``kafka.ssl_cafile``), ``broker.key`` (0600), ``broker.crt`` and
``broker.pem`` (key and certificate chain in one file, 0600: the PEM key store Kafka's
SASL_SSL listener reads).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from qilu import pki
from qilu.errors import ConfigError
from qilu.settings import Settings


def _dir(args: argparse.Namespace, settings: Settings) -> Path:
    return Path(args.dir) if args.dir else settings.services.state_dir / "pki"


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _init(args: argparse.Namespace, settings: Settings) -> int:
    d = _dir(args, settings)
    if (d / "ca.key").exists() and not args.force:
        raise ConfigError(
            "pki init", f"{d / 'ca.key'} exists; agents trust it (--force makes a new CA)"
        )
    ca = pki.new_ca(days=args.days)
    _write(d / "ca.key", ca.key_pem, secret=True)
    _write(d / "ca.crt", ca.cert_pem, secret=False)
    sys.stdout.write(f"CA written to {d / 'ca.crt'} (give it to every agent as ssl_cafile)\n")
    return 0


def _issue(args: argparse.Namespace, settings: Settings) -> int:
    d = _dir(args, settings)
    try:
        ca = pki.KeyPair((d / "ca.key").read_bytes(), (d / "ca.crt").read_bytes())
    except FileNotFoundError as exc:
        raise ConfigError("pki issue", f"{exc.filename} missing: run `qilu pki init`") from exc
    current = d / "broker.crt"
    if (
        args.renew_within_days is not None
        and current.exists()
        and not pki.needs_renewal(current.read_bytes(), within_days=args.renew_within_days)
    ):
        left = pki.expires_in_days(current.read_bytes())
        sys.stdout.write(f"{current} valid for {left:.0f} more days: kept\n")
        return 0
    names = args.name or [settings.services.host]
    pair = pki.issue_server(ca, names, days=args.days)
    _write(d / "broker.key", pair.key_pem, secret=True)
    _write(d / "broker.crt", pair.cert_pem + ca.cert_pem, secret=False)
    _write(d / "broker.pem", pair.key_pem + pair.cert_pem + ca.cert_pem, secret=True)
    sys.stdout.write(
        f"broker certificate for {', '.join(names)} written to {d} (valid {args.days} days);"
        " restart the broker's listener to use it\n"
    )
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    d = _dir(args, settings)
    for name in ("ca.crt", "broker.crt"):
        path = d / name
        if not path.exists():
            sys.stdout.write(f"{name}: missing\n")
            continue
        pem = path.read_bytes()
        names = ", ".join(pki.names_of(pem)) or "-"
        sys.stdout.write(f"{name}: expires in {pki.expires_in_days(pem):.0f} days; names {names}\n")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pki",
        help="the platform's CA and the broker's TLS certificate for the agents' listener",
        description=(
            "A CA of the platform's own signs the certificate of Kafka's SASL_SSL listener "
            "for edge agents; agents verify the broker with the CA's certificate."
        ),
    )
    actions = p.add_subparsers(dest="pki_command", metavar="ACTION", required=True)
    dir_help = "folder of the CA and certificates (default: <state dir>/pki)"

    init = actions.add_parser("init", help="create the CA (ca.key, ca.crt)")
    init.add_argument("--dir", default=None, help=dir_help)
    init.add_argument(
        "--days", type=int, default=pki.CA_DAYS, help=f"validity (default {pki.CA_DAYS})"
    )
    init.add_argument("--force", action="store_true", help="replace an existing CA")
    init.set_defaults(handler=_init)

    issue = actions.add_parser(
        "issue", help="issue (or rotate) the broker's certificate, signed by the CA"
    )
    issue.add_argument("--dir", default=None, help=dir_help)
    issue.add_argument(
        "--name",
        action="append",
        default=None,
        help="a host name or IP address agents connect to (repeat; default the services host)",
    )
    issue.add_argument(
        "--days",
        type=int,
        default=pki.SERVER_DAYS,
        help=f"validity in days (default {pki.SERVER_DAYS})",
    )
    issue.add_argument(
        "--renew-within-days",
        type=float,
        default=None,
        help="only issue if the current certificate expires within this many days "
        f"(e.g. {pki.RENEW_WITHIN_DAYS}, for a daily timer)",
    )
    issue.set_defaults(handler=_issue)

    show = actions.add_parser("show", help="expiry and names of the CA and broker certificates")
    show.add_argument("--dir", default=None, help=dir_help)
    show.set_defaults(handler=_show)
