"""Client worker for one peer: runs every workload against a running server.

``python bench/worker.py NAME --port P --server-pid PID --plan JSON --out FILE``

Started by bench/run.py (a new worker process for each peer and round, so the client's
``time.process_time()`` covers that peer's client alone).  Writes its samples as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
from dataclasses import asdict

from peers import PEERS
from peers.common import Plan, Recorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--plan", required=True, help="Plan as JSON")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    plan = Plan(**json.loads(args.plan))
    module = importlib.import_module(PEERS[args.peer].module)
    rec = Recorder(args.server_pid)
    module.run_client(args.port, plan, rec)
    with open(args.out, "w") as f:
        json.dump({"samples": [asdict(s) for s in rec.samples]}, f)


if __name__ == "__main__":
    main()
