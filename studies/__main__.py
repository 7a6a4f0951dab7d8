"""The studies' command line.

    python -m studies list                                   # the studies and their rows
    python -m studies run STUDY [--only ROW ...] [--data DIR] [--max-update N] [--tiny]
    python -m studies table STUDY                            # redraw RESULTS/STUDY.json from the finished rows
    python -m studies docs [--check]                         # the generated blocks of README.md and docs/
    python -m studies plots                                  # the figures of docs/results.md
"""

import argparse
import os
import sys

from studies import store as results
from studies.catalog import STUDIES, study


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m studies", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the studies and their rows")
    run = commands.add_parser("run", help="train and score rows (a finished row is skipped)")
    run.add_argument("study", choices=list(STUDIES))
    run.add_argument("--only", nargs="+", metavar="ROW", help="these rows (default: the study's main rows)")
    run.add_argument("--data", help="the study's data folder (default: under ../shared/data)")
    run.add_argument("--workdir", default=os.path.join(results.REPO, "runs"), help="checkpoints: WORKDIR/STUDY/ROW")
    run.add_argument("--results", default=results.RESULTS, help="result files: RESULTS/STUDY/ROW")
    run.add_argument("--max-update", type=int, help="the training budget in updates (default: the study's)")
    run.add_argument("--max-epoch", type=int, help="the training budget in epochs (default: the study's)")
    run.add_argument("--tiny", action="store_true", help="the same rows on tiny models (tests and trials)")
    run.add_argument("--test", action="append", default=[], metavar="PREFIX",
                     help="translation studies: also score PREFIX.SRC -> PREFIX.TGT (repeatable)")
    table = commands.add_parser("table", help="redraw a study's table from its finished rows")
    table.add_argument("study", choices=list(STUDIES))
    table.add_argument("--results", default=results.RESULTS)
    docs = commands.add_parser("docs", help="rewrite the generated blocks of README.md and docs/")
    docs.add_argument("--check", action="store_true", help="exit 1 if a block is out of date")
    commands.add_parser("plots", help="redraw the figures of docs/results.md")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name in STUDIES:
            spec = study(name)
            print(f"{name}: {' '.join(spec.rows)}" + (f" | diagnosis: {' '.join(spec.diagnosis)}"
                                                      if spec.diagnosis else ""))
        return 0
    if args.command == "run":
        from studies.runner import run_study

        try:
            spec = study(args.study, tiny=args.tiny, tests=args.test)
            run_study(spec, args.only, args.data, args.workdir, results.Store(args.results),
                      max_update=args.max_update, max_epoch=args.max_epoch)
        except ValueError as error:
            parser.error(str(error))
        return 0
    if args.command == "table":
        from studies.runner import write_table

        write_table(study(args.study), results.Store(args.results))
        return 0
    if args.command == "docs":
        from studies import docs as generated

        return generated.main(["--check"] if args.check else [])
    from studies import plots

    plots.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
