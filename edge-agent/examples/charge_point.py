"""A charge point with one connector running one charging session over OCPP 1.6J.

The walk-through in edge-agent/README.md runs it against the agent's OCPP collector, as a real
pile would connect: boot, status, authorisation of an id tag, a transaction with its meter
values, stop. Each request and its answer is written to stdout. Built from the ``ocpp``
library's charge point side, which validates every message against the OCPP 1.6 schemas.

    python edge-agent/examples/charge_point.py ws://127.0.0.1:9000/ocpp QD-LAOSHAN-10 \\
        --id-tag 04A1B2C3D4E5F6 --energy-wh 12345 --power-w 7200
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

from ocpp.v16 import ChargePoint, call
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol


def now() -> str:
    """The time now as a pile sends it (milliseconds: two statuses within one second are
    two readings, not a conflicting duplicate)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def show(request: Any, answer: Any) -> None:
    sys.stdout.write(f"{type(request).__name__} -> {answer}\n")
    sys.stdout.flush()


async def session(cp: ChargePoint, args: argparse.Namespace) -> None:
    async def ask(request: Any) -> Any:
        answer = await cp.call(request)
        show(request, answer)
        return answer

    boot = await ask(call.BootNotification(charge_point_model="AC7", charge_point_vendor="Qilu"))
    if boot.status != "Accepted":
        raise SystemExit(f"BootNotification not accepted: {boot.status}")
    await ask(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"))
    auth = await ask(call.Authorize(id_tag=args.id_tag))
    if auth.id_tag_info["status"] != "Accepted":
        raise SystemExit(f"id tag {args.id_tag} refused: {auth.id_tag_info['status']}")
    start = await ask(
        call.StartTransaction(
            connector_id=1, id_tag=args.id_tag, meter_start=args.energy_wh - 2000, timestamp=now()
        )
    )
    tx = start.transaction_id
    await ask(
        call.StatusNotification(
            connector_id=1, error_code="NoError", status="Charging", timestamp=now()
        )
    )
    await ask(
        call.MeterValues(
            connector_id=1,
            transaction_id=tx,
            meter_value=[
                {
                    "timestamp": now(),
                    "sampledValue": [
                        {
                            "value": str(args.energy_wh),
                            "measurand": "Energy.Active.Import.Register",
                            "unit": "Wh",
                        },
                        {
                            "value": str(args.power_w),
                            "measurand": "Power.Active.Import",
                            "unit": "W",
                        },
                    ],
                }
            ],
        )
    )
    await ask(
        call.StopTransaction(
            transaction_id=tx, meter_stop=args.energy_wh, timestamp=now(), id_tag=args.id_tag
        )
    )
    await ask(
        call.StatusNotification(
            connector_id=1, error_code="NoError", status="Available", timestamp=now()
        )
    )


async def main(args: argparse.Namespace) -> None:
    url = f"{args.url.rstrip('/')}/{args.charge_point}"
    async with connect(url, subprotocols=[Subprotocol("ocpp1.6")]) as ws:
        cp = ChargePoint(args.charge_point, ws)
        listener = asyncio.create_task(cp.start())
        try:
            await session(cp, args)
        finally:
            listener.cancel()


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url", help="the agent's OCPP endpoint, e.g. ws://127.0.0.1:9000/ocpp")
    p.add_argument("charge_point", help="the charge point id (the last part of the URL)")
    p.add_argument("--id-tag", required=True, help="the RFID tag that starts the session")
    p.add_argument(
        "--energy-wh", type=int, default=12345, help="the energy register at the end (Wh)"
    )
    p.add_argument("--power-w", type=int, default=7200, help="the power during the session (W)")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
