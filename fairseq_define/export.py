"""Export a trained DeFINE Transformer as a stock fairseq checkpoint that loads without the plugin.

    fairseq-define-export IN.pt OUT.pt                  # or python -m fairseq_define.export IN.pt OUT.pt
    fairseq-define-export IN.pt OUT.pt --data DIR       # where the dictionaries are, if not at the training path
    fairseq-define-export IN.pt OUT.pt --json           # the report as JSON

IN: a checkpoint of `define_transformer_lm*` or `define_transformer*`. OUT: the same model as fairseq's own
`transformer_lm*` / `transformer*` architecture of the same sizes (paper §3.4: the unit depends only on the token):
- input: an nn.Embedding(V, m) holding the embedding's output for every id (its forward in eval mode, padding row
  included), times the model's embed_scale only where stock fairseq cannot apply that scale itself;
- output: a tied adaptive softmax becomes fairseq's untied AdaptiveSoftmax with the same weights (tied head
  projections folded into the head); an output scored against the lookup Map becomes project_out_dim (m -> n, with
  the transposed n -> d Map projection folded in) and an untied output projection holding the Map table.
Everything else in the model config carries over; what the stock model cannot express is a one-line error.
The exported model's log-probabilities are checked against the original's before anything is written.
The plugin's Transformer-XL and LSTM models have no stock twin and are refused.
Exit status 0 on success; an error (a bad argument, a checkpoint it cannot read, a model it cannot export) is one
line `fairseq-define-export: error: ...` on stderr and exit status 2, and nothing is written.

Not exportable as stock: `--share-all-embeddings` ties the output to the input table in fairseq, while a DeFINE
output scores against the Map, so the exported encoder and decoder keep two equal tables (one tensor in the file).
"""

import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from fairseq_define.params import OneLineErrorParser

PROG = "fairseq-define-export"
LOGPROB_TOLERANCE = 1e-4  # the largest |log p| difference between the original and the export that is accepted
STOCK_MODELS = {"define_transformer_lm": "transformer_lm", "define_transformer": "transformer"}


class ExportError(ValueError):
    """The checkpoint cannot be expressed as a stock fairseq model (the message says what)."""


# input ------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def embedding_table(embedding: nn.Module, chunk: int = 16384) -> torch.Tensor:
    """[V, m]: the embedding's forward over every id in eval mode (whatever the unit computes, padding row too)."""
    was_training = embedding.training
    embedding.eval()
    device = next(embedding.parameters()).device
    V = embedding.num_embeddings
    table = torch.cat([embedding(torch.arange(start, min(start + chunk, V), device=device))
                       for start in range(0, V, chunk)])
    embedding.train(was_training)
    return table


def input_tables(sides: Dict[str, nn.Module]) -> Tuple[Dict[str, torch.Tensor], bool, List[str]]:
    """({side: [V, m] table}, no_scale_embedding, notes) for the encoder/decoder modules in `sides`: the stock
    model multiplies by sqrt(m) (or 1.0 with --no-scale-embedding); a scale it cannot apply goes into the table."""
    scales = {name: float(side.embed_scale) for name, side in sides.items()}
    stock = {name: math.sqrt(side.embed_tokens.embedding_dim) for name, side in sides.items()}
    tables = {name: embedding_table(side.embed_tokens) for name, side in sides.items()}
    if scales == stock:
        return tables, False, [f"embed_scale sqrt(m) = {next(iter(stock.values())):g}, applied by the stock model"]
    if all(s == 1.0 for s in scales.values()):
        return tables, True, ["embed_scale 1.0: --no-scale-embedding"]
    tables = {name: table * scales[name] for name, table in tables.items()}
    return tables, True, [f"embed_scale {scales} folded into the tables; --no-scale-embedding"]


# output -----------------------------------------------------------------------------------------------------------

def effective_weight(linear: nn.Module) -> torch.Tensor:
    """[out, in] weight of an nn.Linear or of fairseq's TiedLinear (transposed where it reads its weight so)."""
    if getattr(linear, "transpose", False):
        return linear.weight.t()
    if isinstance(linear, nn.Linear) and linear.bias is not None:
        raise ExportError(f"{type(linear).__name__} with a bias in the adaptive softmax has no stock counterpart")
    return linear.weight


def untied_adaptive_softmax(softmax: nn.Module, factor: float) -> Dict[str, torch.Tensor]:
    """fairseq's AdaptiveSoftmax (tied to an AdaptiveInput or not) -> the state of an untied one with the same
    outputs: head [c0 + C, d]; tail i: [w_i, d] then [size_i, w_i], w_i = d // factor**(i + 1) (zero-padded)."""
    from fairseq.modules.adaptive_softmax import AdaptiveSoftmax, TiedHeadModule

    if not isinstance(softmax, AdaptiveSoftmax):
        raise ExportError(f"decoder.adaptive_softmax is {type(softmax).__name__}, not fairseq's AdaptiveSoftmax")
    head = softmax.head
    if isinstance(head, TiedHeadModule):
        parts = list(head.word_proj) if isinstance(head.word_proj, nn.Sequential) else [head.word_proj]
        words = effective_weight(parts[-1])  # [c0, n]
        if len(parts) == 2:
            words = words @ effective_weight(parts[0])  # [c0, n] @ [n, d]
        head_weight = torch.cat([words, effective_weight(head.class_proj)])
    else:
        head_weight = effective_weight(head)
    d = softmax.input_dim
    state = {"adaptive_softmax.head.weight": head_weight}
    for i, tail in enumerate(softmax.tail):
        first, last = effective_weight(tail[0]), effective_weight(tail[2])  # [w, d], [size, w]
        width = int(d // factor ** (i + 1))
        if width < first.size(0):
            raise ExportError(f"adaptive softmax band {i + 1} is {first.size(0)} wide; stock fairseq's untied one "
                              f"is d // factor**{i + 1} = {width} wide (d = {d}, factor = {factor}): not expressible")
        pad = width - first.size(0)
        state[f"adaptive_softmax.tail.{i}.0.weight"] = nn.functional.pad(first, (0, 0, 0, pad))
        state[f"adaptive_softmax.tail.{i}.2.weight"] = nn.functional.pad(last, (0, pad))
    return state


def output_layer(decoder: nn.Module, factor: float) -> Tuple[Dict[str, torch.Tensor], int, str]:
    """(decoder state of the stock output layer, decoder_output_dim, description): project_out_dim and
    output_projection or adaptive_softmax, computing what the DeFINE decoder's output layer computes."""
    from fairseq_define.modules.tied_map_output import TiedMapOutput

    m = decoder.embed_dim
    project = decoder.project_out_dim.weight if decoder.project_out_dim is not None else None  # [out, m]
    if decoder.adaptive_softmax is not None:
        state = untied_adaptive_softmax(decoder.adaptive_softmax, factor)
        out_dim, what = decoder.adaptive_softmax.input_dim, "adaptive softmax -> fairseq's untied AdaptiveSoftmax"
        if project is None and out_dim != m:
            raise ExportError(f"adaptive softmax reads {out_dim}-dim states from an {m}-dim decoder without a "
                              f"projection")
        if project is not None and out_dim == m:
            raise ExportError("project_out_dim in front of an adaptive softmax of the model's width is not expressible")
    else:
        output = decoder.output_projection
        if isinstance(output, TiedMapOutput):  # logits = (x @ P) @ T^T, P [d, n], T [V, n]
            fold = output.proj_weight.t()  # [n, d]
            project = fold if project is None else fold @ project
            weight, what = output.weight, "scored against the Map through P^T -> project_out_dim (m -> n) + Map table"
        elif isinstance(output, nn.Linear) and output.bias is None:
            weight, what = output.weight, "output projection (untied copy)"
        else:
            raise ExportError(f"decoder.output_projection is {type(output).__name__}; no stock counterpart")
        out_dim = weight.size(1)
        if project is not None and out_dim == m:  # the stock decoder has no project_out_dim at out_dim == m
            weight, project = weight @ project, None
        state = {"output_projection.weight": weight}
    if project is not None:
        state["project_out_dim.weight"] = project
    return state, out_dim, what


# config and model -------------------------------------------------------------------------------------------------

def stock_model_config(model_cfg: dict, kind: str) -> dict:
    """The original's cfg.model for the stock model: define_* options dropped, the architecture renamed."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    name = model_cfg.get("_name") or model_cfg.get("arch")
    twin = name[len("define_"):] if name and name.startswith("define_") else None
    if twin not in ARCH_MODEL_REGISTRY or ARCH_MODEL_REGISTRY[twin].__module__.startswith("fairseq_define"):
        twin = STOCK_MODELS[kind]
    cfg = {k: v for k, v in model_cfg.items() if not k.startswith("define_")}
    cfg["_name"] = twin
    if "arch" in cfg:
        cfg["arch"] = twin
    allowed = stock_fields(kind) | {"_name", "arch"}
    unknown = sorted(set(cfg) - allowed)
    if unknown:
        raise ExportError(f"cfg.model.{unknown[0]} has no place in stock fairseq's {twin}")
    return cfg


def stock_fields(kind: str) -> set:
    """The option names of the stock model (flat, as the checkpoint's cfg.model holds them)."""
    if kind == "lm":
        from fairseq.models.transformer_lm import TransformerLanguageModelConfig

        return set(TransformerLanguageModelConfig.__dataclass_fields__)
    from fairseq_define.models.define_transformer import _flat_transformer_fields

    return {name for name, _ in _flat_transformer_fields()}


def export_model(model: nn.Module, model_cfg: dict, task) -> Tuple[nn.Module, dict, dict]:
    """(the stock fairseq model computing the DeFINE model's outputs, its cfg.model, what was done).

    model: a DefineTransformerLanguageModel or DefineTransformerModel (weights loaded); model_cfg: its cfg.model
    (a plain dict); task: the fairseq task it was built for (its dictionaries).
    """
    from omegaconf import OmegaConf

    from fairseq import models
    from fairseq_define.models.define_transformer import DefineTransformerModel
    from fairseq_define.models.define_transformer_lm import DefineTransformerLanguageModel

    if isinstance(model, DefineTransformerLanguageModel):
        kind, sides = "lm", {"decoder": model.decoder}
    elif isinstance(model, DefineTransformerModel):
        kind, sides = "translation", {"encoder": model.encoder, "decoder": model.decoder}
    else:
        what = "has no stock fairseq twin" if type(model).__module__.startswith("fairseq_define") else "is not DeFINE"
        raise ExportError(f"{type(model).__name__} {what}; fairseq-define-export takes define_transformer_lm* and "
                          f"define_transformer* checkpoints")
    cfg = stock_model_config(model_cfg, kind)
    tables, no_scale, notes = input_tables(sides)
    decoder_state, out_dim, output_note = output_layer(model.decoder, float(cfg.get("adaptive_softmax_factor", 4.0)))
    cfg.update(no_scale_embedding=no_scale, decoder_output_dim=out_dim, decoder_input_dim=cfg["decoder_embed_dim"],
               adaptive_input=False, tie_adaptive_weights=False, tie_adaptive_proj=False,
               share_decoder_input_output_embed=False)
    if kind == "translation":
        cfg["share_all_embeddings"] = False

    stock = models.build_model(OmegaConf.create(cfg), task)
    if type(stock).__module__.startswith("fairseq_define"):
        raise ExportError(f"{cfg['_name']} builds the plugin's {type(stock).__name__}, not a stock model")
    replaced = {f"{side}.embed_tokens.weight": table for side, table in tables.items()}
    replaced.update({f"decoder.{key}": value for key, value in decoder_state.items()})
    original = model.state_dict()
    gone = ("embed_tokens.", "decoder.adaptive_softmax.", "decoder.output_projection.", "decoder.project_out_dim.")
    state = {}
    for key, value in stock.state_dict().items():
        source = replaced.get(key, original.get(key))
        if source is None or source.shape != value.shape:
            raise ExportError(f"no value for the stock model's {key} {list(value.shape)}")
        state[key] = source.detach().to(value.dtype).clone()
    dropped = [k for k in original if k not in state and not any(g in k for g in gone)]
    if dropped:
        raise ExportError(f"{dropped[0]} of the DeFINE model has no place in the stock model")
    stock.load_state_dict(state, strict=True)
    stock.eval()
    shared = (kind == "translation" and model.encoder.embed_tokens is model.decoder.embed_tokens
              and torch.equal(state["encoder.embed_tokens.weight"], state["decoder.embed_tokens.weight"]))
    if kind == "translation" and model_cfg.get("share_all_embeddings"):
        notes.append("--share-all-embeddings: stock fairseq would tie the output to the V x m table; the encoder "
                     "and decoder keep equal tables" + (" (one tensor in the file)" if shared else ""))
    return stock, cfg, {"arch": cfg["_name"], "input": notes, "output": output_note, "shared_table": shared}


@torch.no_grad()
def max_logprob_difference(original: nn.Module, stock: nn.Module, vocab: int, seed: int = 0) -> float:
    """max |log p_original - log p_stock| over the full vocabulary at every position of a random batch."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(4, vocab, (3, 17), generator=generator)
    original.eval(), stock.eval()
    if hasattr(original, "encoder"):
        args = (tokens, torch.full((3,), 17), torch.randint(4, vocab, (3, 11), generator=generator))
    else:
        args = (tokens,)
    a = original.get_normalized_probs(original(*args), log_probs=True)
    b = stock.get_normalized_probs(stock(*args), log_probs=True)
    return float((a - b).abs().max())


# checkpoint -------------------------------------------------------------------------------------------------------

def count(model: nn.Module) -> Tuple[int, int]:
    """(parameters, bytes), each shared parameter once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() * p.element_size() for p in params)


def plugin_component(group: str, name: Optional[str]) -> bool:
    """Whether the registered task/criterion/optimizer/lr_scheduler `name` is one the plugin adds."""
    from fairseq import criterions, optim, tasks
    from fairseq.optim import lr_scheduler

    registry = {"task": tasks.TASK_REGISTRY, "criterion": criterions.CRITERION_REGISTRY,
                "optimizer": optim.OPTIMIZER_REGISTRY, "lr_scheduler": lr_scheduler.LR_SCHEDULER_REGISTRY}[group]
    return name in registry and registry[name].__module__.startswith("fairseq_define")


def stock_checkpoint(state: dict, cfg: dict, model_cfg: dict, model_state: dict) -> dict:
    """The checkpoint dict of the stock model: plain containers only (loads with torch's weights-only unpickler),
    no optimizer state, no plugin in the config."""
    cfg = dict(cfg, model=model_cfg, common=dict(cfg["common"], user_dir=None))
    if plugin_component("task", (cfg.get("task") or {}).get("_name")):
        raise ExportError(f"task {cfg['task']['_name']} is the plugin's; the stock model needs a stock task")
    for group in ("criterion", "optimizer", "lr_scheduler"):  # training only: dropped where they are the plugin's
        if plugin_component(group, (cfg.get(group) or {}).get("_name")):
            cfg[group] = None
    extra = state.get("extra_state") or {}
    return {
        "args": None,
        "cfg": cfg,
        "model": model_state,
        "optimizer_history": [{k: v for k, v in h.items() if k != "optimizer"}
                              for h in state.get("optimizer_history", [])],
        "extra_state": {k: extra[k] for k in ("epoch", "train_iterator", "previous_training_time") if k in extra}
                       or {"train_iterator": {"epoch": 1}},
        "last_optimizer_state": None,
    }


def one_line(error: BaseException, width: int = 160) -> str:
    """`Type: the first line of the message` (its first sentence where the line is longer than `width`): an
    exception inside a one-line error."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    text = lines[0] if len(lines[0]) <= width else lines[0].split(". ")[0][:width]
    return f"{type(error).__name__}: {text}"


def export_checkpoint(path: str, out: str, data: Optional[str] = None) -> dict:
    """Read the DeFINE checkpoint `path`, write the stock one to `out`; returns the report (`describe` prints it)."""
    from omegaconf import OmegaConf

    from fairseq import checkpoint_utils, tasks

    import fairseq_define.plugin  # noqa: F401  (registers the DeFINE models)

    start = time.perf_counter()
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides={"data": data} if data else None)
    except Exception as e:  # not a file torch reads, or not a fairseq checkpoint
        raise ExportError(f"cannot read {path} as a fairseq checkpoint: {one_line(e)}") from e
    if state.get("cfg") is None:
        raise ExportError(f"{path} has no cfg (a checkpoint from fairseq < 0.10?); re-save it with fairseq-train")
    cfg = OmegaConf.to_container(state["cfg"], resolve=True, enum_to_str=True)
    if not isinstance(cfg["model"], dict):
        cfg["model"] = dict(vars(cfg["model"]))
    try:
        task = tasks.setup_task(state["cfg"].task)
    except FileNotFoundError as e:
        raise ExportError(f"the training data's dictionaries are missing ({one_line(e)}); give --data DIR") from e
    model = task.build_model(state["cfg"].model)
    model.load_state_dict(state["model"], strict=True, model_cfg=state["cfg"].model)
    model.eval()
    stock, model_cfg, report = export_model(model, cfg["model"], task)
    difference = max_logprob_difference(model, stock, len(task.target_dictionary))
    if not difference <= LOGPROB_TOLERANCE:
        raise ExportError(f"the exported model's log-probabilities differ from the original's by {difference:.3g} "
                          f"(> {LOGPROB_TOLERANCE:g}); nothing written")
    model_state = stock.state_dict()
    if report["shared_table"]:  # one tensor under both names: torch.save stores it once
        model_state["decoder.embed_tokens.weight"] = model_state["encoder.embed_tokens.weight"]
    checkpoint = stock_checkpoint(state, cfg, model_cfg, model_state)
    partial = out + ".partial"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        torch.save(checkpoint, partial)
    except OSError as e:
        if os.path.exists(partial):
            os.remove(partial)
        raise ExportError(f"cannot write {out}: {one_line(e)}") from e
    try:
        torch.load(partial, map_location="cpu", weights_only=True)  # what stock fairseq does on torch >= 2.6
    except Exception as e:
        os.remove(partial)
        raise ExportError(f"the checkpoint would not load in stock fairseq (torch weights-only): {one_line(e)}") from e
    os.replace(partial, out)
    (params_in, bytes_in), (params_out, bytes_out) = count(model), count(stock)
    report.update(
        source_arch=cfg["model"].get("_name"), max_logprob_difference=difference,
        params={"before": params_in, "after": params_out}, param_bytes={"before": bytes_in, "after": bytes_out},
        file_bytes={"before": os.path.getsize(path), "after": os.path.getsize(out)},
        seconds=time.perf_counter() - start,
    )
    return report


def describe(report: dict) -> str:
    """The report as the lines the command prints."""
    p, b, f = report["params"], report["param_bytes"], report["file_bytes"]
    delta = p["after"] - p["before"]
    lines = [
        f"{report['source_arch']} -> {report['arch']} (stock fairseq: no --user-dir)",
        "input:  DeFINE embedding -> nn.Embedding(V, m) of its outputs; " + "; ".join(report["input"]),
        f"output: {report['output']}",
        f"params: {p['before']:,} -> {p['after']:,} ({delta:+,})"
        + ("; larger: the V x m table outweighs the Map and the unit" if delta > 0 else ""),
        f"bytes:  parameters {b['before']:,} -> {b['after']:,}; file {f['before']:,} -> {f['after']:,}",
        f"check:  max |log p| difference {report['max_logprob_difference']:.2e} (original vs exported)",
        f"time:   {report['seconds']:.2f} s",
    ]
    return "\n".join(lines)


def command_line() -> argparse.ArgumentParser:
    """The command's argument parser (one-line errors, exit status 2)."""
    parser = OneLineErrorParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="the DeFINE checkpoint (IN.pt)")
    parser.add_argument("out", help="where to write the stock fairseq checkpoint (OUT.pt)")
    parser.add_argument("--data", help="the data folder with the dictionaries (default: the checkpoint's)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def main(argv=None) -> None:
    """fairseq-define-export: prints the report and exits 0; a bad argument, a checkpoint it cannot read or a model
    it cannot export is one line `fairseq-define-export: error: ...` on stderr and exit status 2, nothing written.
    In Python, `export_checkpoint` returns the report."""
    parser = command_line()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if not os.path.isfile(args.checkpoint):
        parser.error(f"no checkpoint file {args.checkpoint}")
    if args.data is not None and not os.path.isdir(args.data):
        parser.error(f"--data {args.data} is not a folder")
    try:
        report = export_checkpoint(args.checkpoint, args.out, args.data)
    except ExportError as e:
        parser.error(str(e))
    print(json.dumps(report) if args.json else describe(report))


if __name__ == "__main__":
    main()
