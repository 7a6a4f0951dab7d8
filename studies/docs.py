"""The generated parts of the documentation: docs/models.md's reference and README.md's results table.

    python -m studies docs            # rewrite the generated blocks
    python -m studies docs --check    # exit 1 if a block is out of date (tests/test_docs.py runs this)

- docs/models.md, block `reference`: built from `DefineConfig` (the `--define-*` flags, their defaults, choices and
  help) and from fairseq's registries once the plugin is loaded (the plugin's models with their architectures and
  the flags each adds, its tasks, criterions, optimizers and lr schedulers), so a new option or architecture
  appears by regenerating.
- README.md, block `results`, and docs/results.md, block `cross_model`: the "+ DeFINE / control" tables (the
  recommended recipe's test rows; every row, valid and test, with parameters), read from the committed
  docs/results/*.json (`RESULTS` below says which rows; a new study row is one more entry there).

Only the text between a block's BEGIN and END markers is generated; the prose around it is written by hand.
"""

import argparse
import dataclasses
import enum
import inspect
import os
import sys
from typing import Iterable, List

from studies.store import REPO as REPO_ROOT
from studies.store import Store

# The "+ DeFINE / control" rows: (model, study, control row, DeFINE row, recipe, the paper's figure). Perplexity
# studies compare perplexity (ratio), mt_multi30k compares BLEU of the averaged last 5 checkpoints (difference,
# paired bootstrap p) and, on validation, its label-smoothed loss. Recipe: "paper" (the paper's unit, each study's
# own step) or "recommended" (`--define-preset recommended`; the authors-n-fan-in rows ran exactly its unit). README
# shows the recommended rows; docs/results.md every row. NEW STUDY ROWS GO HERE (then run `python -m studies docs`).
PAPER, RECOMMENDED = "paper's unit", "recommended"
LM_PAPER, TXL_PAPER = "0.89x (Table 2), 0.92x (Table 1a)", "0.86-0.91x (Table 2)"
MT_PAPER = "DeFINE >= the full table, fewer parameters (Table 3, WMT'14)"
RESULTS = [
    *[("Transformer LM", "lm_wikitext2", f"map-{n}", f"define-{n}", PAPER, LM_PAPER) for n in (256, 128, 64)],
    *[("Transformer LM", "lm_wikitext2", f"map-{n}", f"authors-{n}-fan-in", RECOMMENDED, LM_PAPER)
      for n in (256, 128, 64)],
    *[("Transformer-XL", "txl_wikitext2", f"map-{n}", f"define-{n}", PAPER, TXL_PAPER) for n in (256, 64)],
    *[("Transformer-XL", "txl_wikitext2", f"map-{n}", f"authors-{n}-fan-in", RECOMMENDED, TXL_PAPER)
      for n in (256, 64)],
    ("AWD-LSTM, Table 1a", "lstm_wikitext2", "adaptive-256", "adaptive-256-define", PAPER, "0.92x (Table 1a)"),
    ("AWD-LSTM, Table 1a", "lstm_wikitext2", "adaptive-256", "adaptive-256-authors-fan-in", RECOMMENDED,
     "0.92x (Table 1a)"),
    ("AWD-LSTM, Table 1c", "lstm_wikitext2", "baseline", "define-128", PAPER, "0.98x, 17 % fewer parameters"),
    ("AWD-LSTM, Table 1c", "lstm_wikitext2", "baseline", "authors-128-fan-in", RECOMMENDED,
     "0.98x, 17 % fewer parameters"),
    ("Transformer (MT)", "mt_multi30k", "map-128", "define-128", PAPER, MT_PAPER),
    ("Transformer (MT)", "mt_multi30k", "map-128", "authors-128-fan-in", RECOMMENDED, MT_PAPER),
    ("Transformer (MT)", "mt_multi30k", "baseline", "define-128", PAPER, MT_PAPER),
    ("Transformer (MT)", "mt_multi30k", "baseline", "authors-128-fan-in", RECOMMENDED, MT_PAPER),
]
# Pairs run over seeds: (model, study, control rows, recommended rows), seed 1 first (the rows above), then seeds 2, 3.
SEEDED = [
    ("Transformer LM, n = 128", "lm_wikitext2", ["map-128", "map-128-seed2", "map-128-seed3"],
     ["authors-128-fan-in", "recommended-128-seed2", "recommended-128-seed3"]),
    ("AWD-LSTM, Table 1a", "lstm_wikitext2", ["adaptive-256", "adaptive-256-seed2", "adaptive-256-seed3"],
     ["adaptive-256-authors-fan-in", "adaptive-256-recommended-seed2", "adaptive-256-recommended-seed3"]),
]
DATA = {"lm_wikitext2": "WikiText-2", "txl_wikitext2": "WikiText-2", "lstm_wikitext2": "WikiText-2",
        "mt_multi30k": "Multi30k en-de"}


def _marker(name: str):
    return (f"<!-- BEGIN GENERATED {name} by `python -m studies docs`: do not edit by hand -->",
            f"<!-- END GENERATED {name} -->")


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _show_default(value) -> str:
    if value is None:
        return "unset"
    if value == "???":  # omegaconf's MISSING: a required value (fairseq's positional data directory)
        return "required"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"`{value}`" if str(value) != "" else "`''`"


def _table(header: List[str], rows: Iterable[List[str]]) -> List[str]:
    rows = list(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def define_flag_rows() -> List[List[str]]:
    """One row per DefineConfig field: flag, default, values, meaning."""
    from fairseq_define.modules.define_config import DefineConfig

    rows = []
    for f in dataclasses.fields(DefineConfig):
        meta = f.metadata
        flag = DefineConfig.flag(f.name)
        help_text = meta["help"]
        if meta["inverted_flag"]:
            default, values = "off", ""
            help_text = f"turns off what is on by default: {help_text}"
        else:
            default = _show_default(f.default)
            values = ", ".join(meta["choices"]) if meta["choices"] else ""
        if meta["flag"]:
            help_text += " (the host model's own flag)"
        rows.append([f"`{flag}`", default, values, help_text])
    return rows


def _field_default(f):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def _interpolated(value) -> bool:
    return isinstance(value, str) and value.startswith("${")


def _choices(f) -> str:
    kind = f.type
    if inspect.isclass(kind) and issubclass(kind, enum.Enum):
        return ", ".join(str(m.value) for m in kind)
    return ""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_names(cls) -> set:
    """The option names (flat, with underscores) of fairseq model `cls`: its parser's flags and its dataclass's
    fields, nested ones flattened as `--arch transformer` takes them (decoder.input_dim -> decoder_input_dim)."""
    parser = argparse.ArgumentParser(add_help=False)
    cls.add_args(parser)
    names = {option[2:].replace("-", "_") for action in parser._actions for option in action.option_strings}
    config_class = getattr(cls, "__dataclass", None)
    for f in dataclasses.fields(config_class) if config_class is not None else ():
        if inspect.isclass(f.type) and dataclasses.is_dataclass(f.type):
            names |= {f"{f.name}_{sub.name}" for sub in dataclasses.fields(f.type)}
        else:
            names.add(f.name)
    return names


def _registered_base(cls, registry):
    """The nearest fairseq class in `cls`'s ancestry registered in `registry` (its counterpart: transformer_lm for
    define_transformer_lm), or None."""
    registered = {c: name for name, c in registry.items()}
    for base in inspect.getmro(cls)[1:]:
        if base in registered and not base.__module__.startswith("fairseq_define"):
            return registered[base], base
    return None, None


def _own_fields(config_class, exclude: set) -> list:
    """Fields of a plugin dataclass that fairseq's own base dataclasses do not define, minus `exclude` names."""
    inherited = set(exclude)
    for base in inspect.getmro(config_class)[1:]:
        if dataclasses.is_dataclass(base) and not base.__module__.startswith("fairseq_define"):
            inherited |= {f.name for f in dataclasses.fields(base)}
    return [f for f in dataclasses.fields(config_class)
            if not f.name.startswith("_") and f.name not in inherited and not _interpolated(_field_default(f))]


def _flag_rows(fields) -> List[List[str]]:
    return [[f"`{_flag(f.name)}`", _show_default(_field_default(f)), _choices(f), f.metadata.get("help", "")]
            for f in fields]


def _plugin_items(registry) -> list:
    return [(name, cls) for name, cls in registry.items() if cls.__module__.startswith("fairseq_define")]


def _code(cls) -> str:
    return f"Code: `{cls.__module__.replace('.', '/')}.py`."


def _first_paragraph(doc) -> str:
    if not doc:
        return ""
    return " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())


def model_sections() -> List[str]:
    from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY, MODEL_REGISTRY

    from fairseq_define.models.define_options import DefineEmbeddingConfig

    define_fields = {f.name: f for f in dataclasses.fields(DefineEmbeddingConfig)}
    lines = []
    for model_name, model_cls in _plugin_items(MODEL_REGISTRY):
        config_class = model_cls.__dataclass
        base_name, base_cls = _registered_base(model_cls, MODEL_REGISTRY)
        lines += ["", f"### `--arch {model_name}`", ""]
        lines += [" ".join(filter(None, [_first_paragraph(model_cls.__doc__), _code(model_cls)])), ""]
        archs = [a for a, m in ARCH_MODEL_REGISTRY.items() if m is model_cls]
        lines += _table(["`--arch`", "what it sets"], (
            [f"`{a}`", _first_paragraph(ARCH_CONFIG_REGISTRY[a].__doc__) or "the model's defaults (below)"]
            for a in archs))
        exclude = set(define_fields)
        if base_cls is not None:  # fairseq's own flags of the counterpart model are not repeated
            exclude |= _option_names(base_cls)
        own = _own_fields(config_class, exclude)
        changed = [f for f in dataclasses.fields(config_class) if f.name in define_fields
                   and _field_default(f) != _field_default(define_fields[f.name])]
        lines.append("")
        if base_cls is not None:
            lines.append(f"Every flag of fairseq's `{base_name}` works; the model adds the `--define-*` flags"
                         + (" and:" if own else "."))
        else:
            lines.append("Its flags (besides the `--define-*` flags):" if own else "Only the `--define-*` flags.")
        if own:
            lines += [""] + _table(["flag", "default", "values", "meaning"], _flag_rows(own))
        if changed:
            lines += ["", "`--define-*` defaults of this model that differ from the table above: "
                      + ", ".join(f"`{_flag(f.name)}` {_show_default(_field_default(f))}" for f in changed) + "."]
    return lines


def component_sections() -> List[str]:
    from fairseq.criterions import CRITERION_DATACLASS_REGISTRY, CRITERION_REGISTRY
    from fairseq.optim import OPTIMIZER_DATACLASS_REGISTRY, OPTIMIZER_REGISTRY
    from fairseq.optim.lr_scheduler import LR_SCHEDULER_DATACLASS_REGISTRY, LR_SCHEDULER_REGISTRY
    from fairseq.tasks import TASK_DATACLASS_REGISTRY, TASK_REGISTRY

    kinds = [("Task", "--task", TASK_REGISTRY, TASK_DATACLASS_REGISTRY),
             ("Criterion", "--criterion", CRITERION_REGISTRY, CRITERION_DATACLASS_REGISTRY),
             ("Optimizer", "--optimizer", OPTIMIZER_REGISTRY, OPTIMIZER_DATACLASS_REGISTRY),
             ("LR scheduler", "--lr-scheduler", LR_SCHEDULER_REGISTRY, LR_SCHEDULER_DATACLASS_REGISTRY)]
    lines = []
    for kind, option, registry, dataclasses_of in kinds:
        for name, cls in _plugin_items(registry):
            lines += ["", f"### {kind} `{option} {name}`", ""]
            lines += [" ".join(filter(None, [_first_paragraph(cls.__doc__), _code(cls)])), ""]
            config_class = dataclasses_of.get(name)
            own = _own_fields(config_class, set()) if config_class is not None else []
            if own:
                lines += _table(["flag", "default", "values", "meaning"], _flag_rows(own))
            else:
                lines.append("No flags of its own.")
    return lines


def _study(name: str) -> dict:
    return Store().table(name)


def _row(study: dict, name: str):
    """Row `name` of a study table (a translation row: its averaged checkpoint), or None if it has not run."""
    rows = [r for r in study["rows"] if r["name"] == name and r.get("checkpoint", "average-last-5") == "average-last-5"]
    if len(rows) > 1:
        raise ValueError(f"{len(rows)} rows named {name!r}")
    return rows[0] if rows else None


def _compare(study: dict, control: dict, define: dict) -> dict:
    """The test and valid comparisons of a pair: perplexity ratios, or for translation the BLEU difference (with
    the paired bootstrap p) on test and the valid-loss difference (and valid BLEU difference, if scored)."""
    if "bleu" not in define:
        return {"control": f"{control['test_ppl']:.2f}", "define": f"{define['test_ppl']:.2f}",
                "test": f"**{define['test_ppl'] / control['test_ppl']:.3f}x**",
                "valid": f"{define['valid_ppl'] / control['valid_ppl']:.3f}x"}
    test = next(t for t in study["paired_bootstrap"] if t["system"] == define["name"]
                and t["control"] == control["name"] and t["checkpoint"] == "average-last-5")
    valid = f"loss {define['valid_loss'] - control['valid_loss']:+.3f}"
    if define.get("valid") and control.get("valid"):
        valid += f", BLEU {define['valid']['bleu'] - control['valid']['bleu']:+.2f}"
    return {"control": f"BLEU {control['bleu']:.2f}", "define": f"{define['bleu']:.2f}",
            "test": f"**{test['bleu_delta']:+.2f} BLEU** (p = {test['bleu_p']:.3f})", "valid": valid}


def _pairs(recipes):
    """(entry, study, control row, DeFINE row) of every RESULTS entry of `recipes` whose rows have run (each study
    table read once)."""
    entries = [entry for entry in RESULTS if entry[4] in recipes]
    studies = {name: _study(name) for name in {entry[1] for entry in entries}}
    for entry in entries:
        study = studies[entry[1]]
        control, define = _row(study, entry[2]), _row(study, entry[3])
        if control is not None and define is not None:
            yield entry, study, control, define


def render_results() -> str:
    """README's table: the recommended rows of RESULTS (test; each against its first control), read from
    docs/results/STUDY.json."""
    rows, shown = [], set()
    for (model, name, control_name, define_name, _, paper), study, control, define in _pairs([RECOMMENDED]):
        if (name, define_name) in shown:
            continue
        shown.add((name, define_name))
        compared = _compare(study, control, define)
        rows.append([model, f"{DATA[name]}, {define['updates']:,} updates", f"{define['n']}",
                     f"`{control_name}` {compared['control']}", f"`{define_name}` {compared['define']}",
                     compared["test"], paper])
    begin, end = _marker("results")
    header = ["model", "data, budget", "n", "control (test ppl / BLEU)", "+ DeFINE", "+ DeFINE / control", "paper"]
    return "\n".join([begin] + _table(header, rows) + [end])


def render_cross_model() -> str:
    """docs/results.md's cross-model table: every RESULTS row, both recipes, valid and test, parameters."""
    rows = []
    for (model, _, control_name, define_name, recipe, _), study, control, define in _pairs([PAPER, RECOMMENDED]):
        compared = _compare(study, control, define)
        rows.append([model, recipe, f"`{control_name}` {control['params'] / 1e6:.2f}M",
                     f"`{define_name}` {define['params'] / 1e6:.2f}M", compared["valid"], compared["test"]])
    begin, end = _marker("cross_model")
    header = ["model", "unit", "control, parameters", "+ DeFINE, parameters", "valid: + DeFINE / control",
              "test: + DeFINE / control"]
    return "\n".join([begin] + _table(header, rows) + [end])


def seed_rows() -> List[dict]:
    """For each SEEDED pair: the seeds both rows finished, the test and valid ratios per seed, their mean and range,
    and the controls' own spread (max / min test perplexity over the seeds)."""
    out = []
    for model, study, controls, defines in SEEDED:
        rows = Store().rows(study)
        pairs = [(rows[c], rows[d]) for c, d in zip(controls, defines) if c in rows and d in rows]
        if not pairs:
            continue
        ratios = {subset: [d[f"{subset}_ppl"] / c[f"{subset}_ppl"] for c, d in pairs] for subset in ("valid", "test")}
        control_test = [c["test_ppl"] for c, _ in pairs]
        out.append({"model": model, "study": study, "seeds": len(pairs), "ratios": ratios,
                    "control_spread": max(control_test) / min(control_test)})
    return out


def render_seeds() -> str:
    """The seed table: each seeded pair's ratio (+ recommended / control) per seed, mean and range."""
    rows = []
    for r in seed_rows():
        cells = [r["model"], f"{r['seeds']}"]
        for subset in ("valid", "test"):
            values = r["ratios"][subset]
            cells.append(f"{' / '.join(f'{v:.3f}' for v in values)}; mean **{sum(values) / len(values):.3f}x** "
                         f"({min(values):.3f}-{max(values):.3f})")
        cells.append(f"{100 * (r['control_spread'] - 1):.1f} %")
        rows.append(cells)
    begin, end = _marker("seeds")
    header = ["pair", "seeds", "valid: recommended / control, per seed; mean (range)", "test: the same",
              "controls' test spread (max / min - 1)"]
    return "\n".join([begin] + _table(header, rows) + [end])


# The frontiers: (model, study, {family: row name pattern with {n}}, the widths n). The recommended family's first
# seed is the authors-n-fan-in rows (the unit `--define-preset recommended` builds).
FRONTIERS = [
    ("Transformer LM", "lm_wikitext2", {"control": ["map-{n}"],
                                         "recommended": ["authors-{n}-fan-in", "recommended-{n}"],
                                         "paper's unit": ["define-{n}"]}, (32, 64, 128, 256, 512)),
    ("Transformer-XL", "txl_wikitext2", {"control": ["map-{n}"],
                                          "recommended": ["authors-{n}-fan-in", "recommended-{n}"],
                                          "paper's unit": ["define-{n}"]}, (64, 128, 256, 512)),
]


def frontier_rows(study: str, families: dict, widths) -> List[dict]:
    """The finished rows of each family at each width (the first of the family's name patterns that ran), as
    `studies.frontier` reads them."""
    rows = Store().rows(study)
    out = []
    for family, patterns in families.items():
        for n in widths:
            r = next((rows[p.format(n=n)] for p in patterns if p.format(n=n) in rows), None)
            if r is not None and r.get("test_ppl") is not None:
                out.append({"name": r["name"], "family": family, "n": n, "params": r["params"],
                            "define_params": r["define_params"], "map_params": r["parts"]["map"],
                            "test_ppl": r["test_ppl"]})
    return out


def render_frontier() -> str:
    """docs/results.md's savings table: for every DeFINE row, the parameters its control family needs for the same
    test perplexity (log-linear between neighbouring control points) and the saving."""
    from studies.frontier import equal_perplexity_savings, savings_markdown

    lines = []
    for model, study, families, widths in FRONTIERS:
        lines += ["", f"**{model}** ({DATA[study]})", "", savings_markdown(equal_perplexity_savings(
            frontier_rows(study, families, widths)))]
    begin, end = _marker("frontier")
    return "\n".join([begin, *lines, "", end])


def render_reference() -> str:
    """docs/models.md's reference block, markers included."""
    import fairseq_define.plugin  # noqa: F401  (registers the models, tasks, criterions, optimizers)

    begin, end = _marker("reference")
    lines = [begin, "", "### The `--define-*` flags (`DefineConfig`)", "",
             "Every DeFINE model takes them; `fairseq_define.modules.DefineConfig` has the same options as fields.",
             ""]
    lines += _table(["flag", "default", "values", "meaning"], define_flag_rows())
    lines += model_sections()
    lines += component_sections()
    lines += ["", end]
    return "\n".join(lines)


BLOCKS = [("docs/models.md", "reference", render_reference), ("README.md", "results", render_results),
          ("docs/results.md", "cross_model", render_cross_model), ("docs/results.md", "seeds", render_seeds),
          ("README.md", "seeds", render_seeds), ("docs/results.md", "frontier", render_frontier)]


def replace_block(text: str, name: str, block: str) -> str:
    begin, end = _marker(name)
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"the markers of block {name!r} are missing: {begin!r} ... {end!r}")
    return text[:start] + block + text[stop + len(end):]


def updated_files(root: str = REPO_ROOT) -> dict:
    """{path: (current text, generated text)} for every file with a generated block."""
    files = {}
    for relative, name, render in BLOCKS:
        path = os.path.join(root, relative)
        current = files[path][0] if path in files else open(path, encoding="utf-8").read()
        previous = files[path][1] if path in files else current
        files[path] = (current, replace_block(previous, name, render()))
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m studies docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check: exit 1 if a block is out of date")
    args = parser.parse_args(argv)
    stale = 0
    for path, (current, generated) in updated_files().items():
        relative = os.path.relpath(path, REPO_ROOT)
        if generated == current:
            print(f"{relative} is up to date")
        elif args.check:
            print(f"{relative} is out of date: run `python -m studies docs`", file=sys.stderr)
            stale += 1
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(generated)
            print(f"wrote {relative}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
