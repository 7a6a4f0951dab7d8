"""Parameter accounting for any registered fairseq architecture, stock or DeFINE.

    fairseq-define-params --arch transformer_lm_wiki103 --vocab-size 267744 --json  # or python -m fairseq_define.params
    python -m fairseq_define.params --arch define_transformer_lm_wiki103 --data data-bin/wikitext-103
    python -m fairseq_define.params --arch define_transformer_wmt_en_de --vocab-size 32768
    python -m fairseq_define.params --arch define_transformer_lm_gpt2_tiny --vocab-size 1000 --layers

Takes fairseq-train's model flags (`--decoder-layers 4`, `--define-map-dim 64`, ...); `--layers` also lists every
DeFINE embedding's layers (weights, biases, norm parameters and MACs per token of each: `DefineEmbedding.accounting`).
The vocabulary comes from the dictionaries in `--data DIR` or is `--vocab-size V` symbols (fairseq's 4 specials
included). The model is built on the meta device, so even full-size models are counted in seconds without
allocating their weights.

Parts: map = the input embedding without the DeFINE unit (for stock models the whole embedding, AdaptiveInput
included, plus any input projection); define = the DeFINE units; context = everything between input and output
(encoder and decoder layers, final norms); output = the output layer (projection, adaptive softmax, m -> n
projection) less what it shares with the input. Shared parameters are counted once.

Exit status 0 on success; a command line that builds no model (a bad flag or value, no vocabulary, an unknown
--arch) is one line `fairseq-define-params: error: ...` on stderr and exit status 2.
"""

import argparse
import json
import os
import sys
import tempfile
from collections import OrderedDict

import torch

PROG = "fairseq-define-params"
PARTS = ("map", "define", "context", "output")
PLUGIN_DIR = os.path.dirname(os.path.abspath(__file__))


class ParamsError(ValueError):
    """A command line that builds no model (the message says why, in one line)."""


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser whose error is one line on stderr, `PROG: error: MESSAGE` (no usage), and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())}\n")


def _refuse(message):
    raise ParamsError(message)


def part_of(name: str) -> str:
    """The part a parameter belongs to, from its name in the model."""
    _, _, rest = name.partition(".")  # drop "encoder." / "decoder."
    if rest.startswith(("embed_tokens.unit.", "embed_tokens.gate")):
        return "define"
    if rest.startswith(("embed_tokens.", "project_in_dim.")):
        return "map"
    if rest.startswith(("output_projection.", "adaptive_softmax.", "project_out_dim.")):
        return "output"
    return "context"


def count_parts(model: torch.nn.Module) -> "OrderedDict[str, int]":
    """{"total", "map", "define", "context", "output"}: parameter counts, shared parameters counted once."""
    counts = OrderedDict((part, 0) for part in PARTS)
    for name, parameter in model.named_parameters():  # yields each shared parameter once
        counts[part_of(name)] += parameter.numel()
    return OrderedDict([("total", sum(counts.values()))] + list(counts.items()))


def _write_dictionary(path: str, vocab_size: int):
    from fairseq.data import Dictionary

    specials = len(Dictionary())
    if vocab_size <= specials:
        raise ParamsError(f"--vocab-size {vocab_size} must be larger than fairseq's {specials} special symbols")
    with open(path, "w") as f:
        for i in range(vocab_size - specials):
            f.write(f"w{i} 1\n")


def build_model(argv, device="meta"):
    """Build the model (and its task) that `fairseq-train DATA <argv>` would build, on `device`."""
    model, task, _ = build_model_and_config(argv, device)
    return model, task


def build_model_and_config(argv, device="meta"):
    """(model, task, cfg.model as a plain dict, as a checkpoint holds it) of `fairseq-train DATA <argv>`; raises
    ParamsError where `argv` builds no model."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--data")
    pre.add_argument("--vocab-size", type=int)
    pre.add_argument("--arch", "-a", required=True)
    pre.add_argument("--task")
    pre.error = _refuse  # a bad command line raises ParamsError instead of exiting
    known, rest = pre.parse_known_args(argv)
    if (known.data is None) == (known.vocab_size is None):
        raise ParamsError("give exactly one of --data DIR or --vocab-size V")

    from omegaconf import OmegaConf

    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.models import ARCH_MODEL_REGISTRY, FairseqLanguageModel

    import fairseq_define.plugin  # noqa: F401  (registers the DeFINE models)
    if known.arch not in ARCH_MODEL_REGISTRY:
        raise ParamsError(f"unknown --arch {known.arch}")
    is_lm = issubclass(ARCH_MODEL_REGISTRY[known.arch], FairseqLanguageModel)
    task = known.task or ("language_modeling" if is_lm else "translation")

    with tempfile.TemporaryDirectory() as tmp:
        data, extra = known.data, []
        if known.vocab_size is not None:
            data = tmp
            if task == "translation":
                for lang in ("src", "tgt"):
                    _write_dictionary(os.path.join(tmp, f"dict.{lang}.txt"), known.vocab_size)
                extra = ["--source-lang", "src", "--target-lang", "tgt"]
            else:
                _write_dictionary(os.path.join(tmp, "dict.txt"), known.vocab_size)
        parser = options.get_training_parser(default_task=task)
        parser.error = _refuse
        args = options.parse_args_and_arch(
            parser, [data, "--task", task, "--arch", known.arch, "--user-dir", PLUGIN_DIR, "--cpu"] + extra + rest
        )
        cfg = convert_namespace_to_omegaconf(args)
        try:
            fairseq_task = tasks.setup_task(cfg.task)
        except FileNotFoundError as e:
            raise ParamsError(f"--data {known.data}: no {os.path.basename(e.filename or 'dictionary')}") from e
        with torch.device(device):
            model = fairseq_task.build_model(cfg.model)
        if isinstance(cfg.model, argparse.Namespace):  # a legacy (add_args) architecture, e.g. translation's
            return model, fairseq_task, dict(vars(cfg.model))
        return model, fairseq_task, OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True)


def main(argv=None) -> None:
    """fairseq-define-params: prints the counts (exit status 0); a command line that builds no model is a one-line
    error and exit status 2. In Python, `build_model` and `count_parts` give the model and its counts."""
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv or not argv:
        print(__doc__)
        return
    as_json, with_layers = "--json" in argv, "--layers" in argv
    argv = [a for a in argv if a not in ("--json", "--layers")]
    try:
        model, _ = build_model(argv)
    except ValueError as e:  # ParamsError, or an option value the model refuses (its message names the flag)
        OneLineErrorParser(prog=PROG).error(str(e))
    counts = count_parts(model)
    layers = embedding_layers(model) if with_layers else {}
    if as_json:
        print(json.dumps({**counts, "layers": layers} if with_layers else counts))
        return
    width = max(len(f"{v:,}") for v in counts.values())
    for part, value in counts.items():
        share = 100.0 * value / counts["total"] if counts["total"] else 0.0
        print(f"{part:>8}  {value:>{width},}  {share:5.1f}%")
    for name, rows in layers.items():
        print(f"\n{name}")
        print(f"  {'layer':<10}{'group':>7}{'weights':>12}{'biases':>9}{'norm':>8}{'params':>12}{'MACs/token':>12}")
        for r in rows:
            print(f"  {r['part']:<10}{r['group']:>7}{r['weights']:>12,}{r['biases']:>9,}{r['norm']:>8,}"
                  f"{r['params']:>12,}{r['macs_per_token']:>12,}")


def embedding_layers(model: torch.nn.Module) -> "OrderedDict[str, list]":
    """{module name: `DefineEmbedding.accounting()` rows} for every DeFINE embedding of `model` (a shared one once)."""
    from fairseq_define.modules.define_embedding import DefineEmbedding

    return OrderedDict((name, module.accounting()) for name, module in model.named_modules()
                       if isinstance(module, DefineEmbedding))


if __name__ == "__main__":
    main()
