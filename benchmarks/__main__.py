"""python -m benchmarks BENCH [--json PATH] [--device cpu|cuda] [--dtype float32|float16|bfloat16]"""

import argparse
import importlib

import torch

from benchmarks.timing import write_json

BENCHES = ("glt", "embedding", "lm", "eval", "breakdown")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    for name in BENCHES:
        module = importlib.import_module(f"benchmarks.{name}")
        p = sub.add_parser(name, help=module.__doc__.strip().splitlines()[0])
        p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
        p.add_argument("--rounds", type=int, default=7, help="timed interleaved rounds (after 2 warm-up rounds)")
        module.add_arguments(p)
        p.set_defaults(module=module)
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    result = args.module.run(args, device, dtype)
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
