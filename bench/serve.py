"""Server entry point for one peer: ``python bench/serve.py NAME --host H --port P``.

Started by bench/run.py as a subprocess; runs until it is terminated.
"""

from __future__ import annotations

import argparse
import importlib

from peers import PEERS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    module = importlib.import_module(PEERS[args.peer].module)
    print(f"serving {args.peer} on {args.host}:{args.port}", flush=True)
    module.serve(args.host, args.port)


if __name__ == "__main__":
    main()
