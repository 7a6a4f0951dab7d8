"""fairseq-train, recording the gradient norm of each part of the model (map, define, context, output) per update.

    python -m examples.language_model.grad_norms OUT.json DATA --user-dir fairseq_define ... (fairseq-train's flags)

Runs fairseq's own training loop in this process; the model it builds gets a hook on every parameter that adds
the squared norm of its accumulated gradient to its part (`fairseq_define.params.part_of`; a tied parameter counts
once, under its first name); the optimizer's step closes the update's record. Every `EVERY`-th
update's norms (before clipping) are written to OUT.json as {"updates": [...], "map": [...], "define": [...], ...},
rewritten as training goes (a resumed run appends).
"""

import json
import logging
import os
import sys

# fairseq's own log format (fairseq_cli.train sets it only if nothing configured logging before it)
logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", datefmt="%Y-%m-%d %H:%M:%S",
                    level=os.environ.get("LOGLEVEL", "INFO").upper(), stream=sys.stdout)

import fairseq.models  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook  # noqa: E402

from fairseq_define.params import PARTS, part_of  # noqa: E402

EVERY = 10


def install(model, path):
    record = json.load(open(path)) if os.path.isfile(path) else {"updates": [], **{part: [] for part in PARTS}}
    current = {part: 0.0 for part in PARTS}
    state = {"update": record["updates"][-1] if record["updates"] else 0, "seen": False}

    def accumulate(part):
        def hook(parameter):
            current[part] += float(parameter.grad.detach().float().pow(2).sum())
            state["seen"] = True
        return hook

    for name, parameter in model.named_parameters():  # each shared parameter once
        parameter.register_post_accumulate_grad_hook(accumulate(part_of(name)))

    def close_update(optimizer, args, kwargs):
        if not state["seen"]:
            return
        state["update"] += 1
        if state["update"] % EVERY == 0:
            record["updates"].append(state["update"])
            for part in PARTS:
                record[part].append(current[part] ** 0.5)
            with open(path, "w") as f:
                json.dump(record, f)
        for part in PARTS:
            current[part] = 0.0
        state["seen"] = False

    register_optimizer_step_post_hook(close_update)  # any optimizer: fairseq wraps torch's


def main():
    out, argv = sys.argv[1], sys.argv[2:]
    build = fairseq.models.build_model

    def build_and_hook(*args, **kwargs):
        model = build(*args, **kwargs)
        install(model, out)
        return model

    fairseq.models.build_model = build_and_hook
    from fairseq_cli import train

    sys.argv = ["fairseq-train", *argv]
    train.cli_main()


if __name__ == "__main__":
    main()
