"""A substation RTU on Modbus TCP: pymodbus's own server holding a transformer's registers.

The walk-through in edge-agent/README.md polls it with the agent's Modbus collector. Holding
registers 0-2 hold what a transformer monitor typically exposes: top-oil and winding
temperature as signed tenths of a degree, load in tenths of a percent. It serves until
stopped (Ctrl-C or SIGTERM).

    python edge-agent/examples/rtu.py --port 5020 --oil 61.5 --winding 70.2 --load 43.8
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


def tenths(value: float) -> int:
    """A signed 16-bit register holding ``value`` in tenths."""
    return round(value * 10) & 0xFFFF


async def main(args: argparse.Namespace) -> None:
    holding = [tenths(args.oil), tenths(args.winding), tenths(args.load)]
    registers = [SimData(address=0, values=holding, datatype=DataType.REGISTERS)]
    bits = [SimData(address=0, values=[False], datatype=DataType.BITS)]  # none used
    rtu = SimDevice(id=args.unit_id, simdata=(bits, bits, registers, registers))
    server = ModbusTcpServer(rtu, address=(args.host, args.port))
    await server.serve_forever(background=True)
    sys.stdout.write(f"RTU on {args.host}:{args.port}, unit {args.unit_id}: {holding}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.shutdown()  # type: ignore[no-untyped-call]


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5020, help="listen port (default 5020)")
    p.add_argument("--unit-id", type=int, default=1, help="Modbus unit id (default 1)")
    p.add_argument("--oil", type=float, default=61.5, help="top-oil temperature, degC")
    p.add_argument("--winding", type=float, default=70.2, help="winding temperature, degC")
    p.add_argument("--load", type=float, default=43.8, help="load, percent")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
