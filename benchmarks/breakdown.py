"""Cost breakdown of a training step: the unit's share of the FLOPs (the floor) beside its share of the time.

    python -m benchmarks breakdown --data ../shared/data/wikitext-2 --json bench-results/breakdown.json

The rows are `python -m benchmarks lm`'s (map-n, define-n, recommended-n, default-n at n = 256 and 64), on the same
real WikiText-2 batches, on the CPU.

FLOPs per training step, counted from the built modules' shapes and the batches' measured sizes (means over
--batches): context (every decoder layer's matmuls, attention over the block), map (the Map's band projections,
on the batch's unique ids where the unit dedupes, else on every position), unit (its matmuls on the unique ids),
output (the adaptive softmax's head on every position, each tail on the positions whose target is in its band).
Forward = 2 x MACs, backward ~ 2 x forward, so a step is 6 x MACs; element-wise work (norms, activations, Adam) is
not counted. `floor` = the row's step FLOPs over map-n's: the step-time ratio that the unit's arithmetic alone
would give.

Time: the step time is timed without the profiler (interleaved rounds, as `lm`); its split into parts comes from
torch.profiler (CPU) on --profile-steps further steps: `unit_forward` (the unit's module and the glue around it in
DefineEmbedding), `unit_backward` (the autograd nodes that the unit's forward created), `parametrization` (the
step-scale parametrizations recomputing weights, forward and backward), `dedupe` (torch.unique and the gather,
with its backward), `rest` (everything else: context, Map, softmax, loss, Adam step, the profiler's own overhead).
"""

import contextlib
import os

import torch
import torch.nn as nn
from torch.autograd.profiler import record_function
from torch.nn.utils import parametrize

from benchmarks import lm
from benchmarks.lm import batches_of, load_models, row_names, study_flags, trainers
from benchmarks.timing import meta, print_table, time_interleaved

PARTS = ("unit_forward", "unit_backward", "parametrization", "dedupe", "rest")
UNIT_PARTS = PARTS[:-1]
FLOP_PARTS = ("context", "map", "unit", "output")
STEP = "bench::step"
EMBEDDING, MAP, UNIT, PARAM = "define::embedding", "define::map", "define::unit", "define::param"
LABELS = (STEP, EMBEDDING, MAP, UNIT, PARAM)
DEDUPE_OPS = ("aten::unique", "aten::_unique", "aten::_unique2", "aten::unique_dim", "aten::embedding")
NOT_UNIT_OPS = ("aten::aminmax", "aten::item", "aten::_local_scalar_dense", "aten::dropout")  # id check, Map dropout
BACKWARD = "autograd::engine::evaluate_function: "


def add_arguments(parser):
    lm.add_arguments(parser)  # the LM benchmark's data, batches and rows
    parser.add_argument("--profile-steps", type=int, default=3, help="profiled steps per row (after one warm-up)")


# FLOPs from the shapes ---------------------------------------------------------------------------------------

def matmul_macs(module) -> int:
    """Multiply-accumulates per input row of every matmul layer in `module` (nn.Linear, GroupLinear, fairseq's
    TiedLinear): the sum of their weights' sizes. 0 for None."""
    from fairseq.modules.adaptive_softmax import TiedLinear

    from fairseq_define.modules.group_linear import GroupLinear

    if module is None:
        return 0
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, (nn.Linear, GroupLinear, TiedLinear)))


def model_shapes(model) -> dict:
    """The MACs per row of each part of a fairseq Transformer LM with a DefineEmbedding (or a plain embedding):

    layers (per position, all decoder layers), attention (per position and key: 2 x width per layer), decoder_proj
    (per position), map_cutoffs / map_bands (per id of each input band), map_out (the control's d -> m, per row),
    unit (per row), dedupe (whether the unit runs on unique ids), softmax_cutoffs / head (per position) / tails
    (per target in band 1, 2, ...).
    """
    decoder = model.decoder
    emb = decoder.embed_tokens
    table = getattr(emb, "map", emb)
    unit = getattr(emb, "unit", None)
    vocab = len(decoder.dictionary)
    if hasattr(table, "embeddings"):  # fairseq's AdaptiveInput: band i is Embedding + Linear(dim_i -> d)
        map_cutoffs, map_bands = list(table.cutoff), [matmul_macs(band) for band in table.embeddings]
    else:
        map_cutoffs, map_bands = [vocab], [matmul_macs(getattr(emb, "map_proj", None))]
    softmax = getattr(decoder, "adaptive_softmax", None)
    if softmax is not None:
        softmax_cutoffs, head, tails = list(softmax.cutoff), matmul_macs(softmax.head), [
            matmul_macs(t) for t in softmax.tail]
    else:
        softmax_cutoffs, head, tails = [vocab], matmul_macs(getattr(decoder, "output_projection", None)), []
    return {
        "layers": sum(matmul_macs(layer) for layer in decoder.layers),
        "attention": sum(2 * layer.embed_dim for layer in decoder.layers),
        "decoder_proj": matmul_macs(getattr(decoder, "project_in_dim", None))
        + matmul_macs(getattr(decoder, "project_out_dim", None)),
        "map_cutoffs": map_cutoffs, "map_bands": map_bands, "map_out": matmul_macs(getattr(emb, "out_proj", None)),
        "unit": matmul_macs(unit), "dedupe": unit is not None and emb.config.dedupe,
        "softmax_cutoffs": softmax_cutoffs, "head": head, "tails": tails,
    }


def band_counts(ids: torch.Tensor, cutoffs) -> list:
    """How many of `ids` fall in each band [0, c_0), [c_0, c_1), ..."""
    bands = torch.bucketize(ids.reshape(-1), torch.tensor(cutoffs, device=ids.device), right=True)
    return torch.bincount(bands, minlength=len(cutoffs))[:len(cutoffs)].tolist()


def batch_stats(batches, shapes) -> dict:
    """Means over `batches`: positions (B x T), block (T), unique (distinct ids), and per band the input ids at
    every position (input_bands), the distinct ids (unique_bands) and the targets (target_bands)."""
    per_batch = []
    for sample in batches:
        tokens, target = sample["net_input"]["src_tokens"], sample["target"]
        unique = torch.unique(tokens)
        per_batch.append({"positions": tokens.numel(), "block": tokens.shape[-1], "unique": unique.numel(),
                          "input_bands": band_counts(tokens, shapes["map_cutoffs"]),
                          "unique_bands": band_counts(unique, shapes["map_cutoffs"]),
                          "target_bands": band_counts(target, shapes["softmax_cutoffs"])})
    count = len(per_batch)

    def mean(key):
        values = [b[key] for b in per_batch]
        if isinstance(values[0], list):
            return [sum(column) / count for column in zip(*values)]
        return sum(values) / count
    return {key: mean(key) for key in per_batch[0]}


def forward_macs(shapes: dict, stats: dict) -> dict:
    """MACs of one forward (model and loss) per part: context, map, unit, output."""
    positions = stats["positions"]
    rows = stats["unique_bands"] if shapes["dedupe"] else stats["input_bands"]  # the ids the Map and unit run on
    return {
        "context": positions * (shapes["layers"] + shapes["attention"] * stats["block"] + shapes["decoder_proj"]),
        "map": sum(r * macs for r, macs in zip(rows, shapes["map_bands"])) + sum(rows) * shapes["map_out"],
        "unit": sum(rows) * shapes["unit"],
        "output": positions * shapes["head"]
        + sum(r * macs for r, macs in zip(stats["target_bands"][1:], shapes["tails"])),
    }


def step_flops(shapes: dict, stats: dict) -> dict:
    """FLOPs of one training step per part (forward 2 x MACs, backward 2 x forward: 6 x MACs), and their total."""
    flops = {part: 6 * macs for part, macs in forward_macs(shapes, stats).items()}
    flops["total"] = sum(flops.values())
    return flops


# time from the profile ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def labelled(model):
    """Profiler ranges around every DefineEmbedding that has a unit (EMBEDDING), its Map (MAP), its unit (UNIT), and
    every parametrization in the model (PARAM), by forward hooks (removed on exit)."""
    from fairseq_define.modules.define_embedding import DefineEmbedding

    handles = []

    def label(module, name):
        open_ranges = []

        def enter(*_):
            open_ranges.append(record_function(name))
            open_ranges[-1].__enter__()

        def leave(*_):
            open_ranges.pop().__exit__(None, None, None)
        handles.extend([module.register_forward_pre_hook(enter), module.register_forward_hook(leave)])

    for module in model.modules():
        if isinstance(module, DefineEmbedding) and module.unit is not None:
            label(module, EMBEDDING)
            label(module.map, MAP)
            label(module.unit, UNIT)
        if parametrize.is_parametrized(module):
            for parametrization in module.parametrizations.values():
                label(parametrization, PARAM)
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _scope(event):
    """(nearest enclosing label or None, the event just below it on the way up)."""
    below, parent = event, event.cpu_parent
    while parent is not None and parent.name not in LABELS:
        below, parent = parent, parent.cpu_parent
    return (None if parent is None else parent.name), below


def _forward_part(event):
    """The part a forward op belongs to: unit, param, dedupe or None (the rest)."""
    label, below = _scope(event)
    if label == PARAM:
        return "param"
    if label == UNIT:
        return "unit"
    if label == EMBEDDING:  # the glue of DefineEmbedding.forward around the Map and the unit
        if below.name in DEDUPE_OPS:
            return "dedupe"
        return None if below.name in NOT_UNIT_OPS or below.name in LABELS else "unit"
    return None


def _in_backward(event):
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(BACKWARD):
            return True
        parent = parent.cpu_parent
    return False


def attribute(events, steps: int) -> dict:
    """Milliseconds per step of each part (PARTS) and in all (`step`), from profiler events of `steps` steps, each
    inside a STEP range, with `labelled` ranges."""
    us = dict.fromkeys(PARTS, 0.0)
    step = 0.0
    created_by = {}  # autograd sequence number -> the part of the forward op that created the node
    for event in events:
        name = event.name
        if name == STEP:
            step += event.cpu_time_total
        elif name == PARAM:
            us["parametrization"] += event.cpu_time_total
        elif name == UNIT:
            us["unit_forward"] += event.cpu_time_total
        elif name.startswith(BACKWARD) or _in_backward(event):
            continue
        else:
            part = _forward_part(event)
            if event.sequence_nr >= 0 and part is not None:
                created_by[event.sequence_nr] = part
            if event.cpu_parent is not None and event.cpu_parent.name == EMBEDDING and part is not None:
                us["dedupe" if part == "dedupe" else "unit_forward"] += event.cpu_time_total
    us["unit_forward"] -= sum(e.cpu_time_total for e in events if e.name == PARAM and _scope(e)[0] == UNIT)
    backward_part = {"unit": "unit_backward", "param": "parametrization", "dedupe": "dedupe"}
    for event in events:
        if event.name.startswith(BACKWARD) and not _in_backward(event):
            part = created_by.get(event.sequence_nr)
            if part is not None:
                us[backward_part[part]] += event.cpu_time_total
    us["rest"] = step - sum(us[part] for part in UNIT_PARTS)
    return {part: value / 1e3 / steps for part, value in {**us, "step": step}.items()}


def profile_parts(model, take_step, steps: int) -> dict:
    """`attribute` of `steps` calls of `take_step` (one training step of `model`), after one warm-up call."""
    from torch.profiler import ProfilerActivity, profile

    take_step()
    with labelled(model), profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            with record_function(STEP):
                take_step()
    return attribute(profiler.events(), steps)


# the benchmark -----------------------------------------------------------------------------------------------

def run(args, device, dtype):
    from examples.common import preprocess_wikitext

    if device.type != "cpu":
        print(f"breakdown: torch.profiler's CPU times are what it splits; running on the CPU, not {device}")
        device = torch.device("cpu")
    data = preprocess_wikitext(os.path.abspath(args.data), args.cache)
    names = row_names(args.map_dims, args.kinds)
    models, task = load_models(data, names, device, dtype)
    batches = batches_of(task, "train", args.max_tokens, args.batches, device)
    ms = time_interleaved(trainers(models, task, batches, args.steps), device, rounds=args.rounds)
    once = trainers(models, task, batches, 1)
    rows, stats = [], {}
    for name, model in models.items():
        shapes = model_shapes(model)
        stats[name] = batch_stats(batches, shapes)
        flops = step_flops(shapes, stats[name])
        parts = profile_parts(model, once[name], args.profile_steps)
        rows.append({"model": name, "params": sum(p.numel() for p in model.parameters()),
                     "ms_per_step": ms[name] / args.steps, "flops": flops,
                     "unit_flop_share": flops["unit"] / flops["total"],
                     "profiled_ms_per_step": parts["step"],
                     "time_share": {part: parts[part] / parts["step"] for part in PARTS}})
        print(f"  {name}: {ms[name] / args.steps:.1f} ms / step", flush=True)
    by_name = {row["model"]: row for row in rows}
    for row in rows:
        control = by_name["map-" + row["model"].rsplit("-", 1)[1]]
        row["vs_map"] = row["ms_per_step"] / control["ms_per_step"]
        row["floor_vs_map"] = row["flops"]["total"] / control["flops"]["total"]
        row["unit_time_share"] = sum(row["time_share"][part] for part in UNIT_PARTS)
        row["ms"] = {part: share * row["ms_per_step"] for part, share in row["time_share"].items()}
    print_table([{**row, **{f"share_{p}": 100 * s for p, s in row["time_share"].items()},
                  "unit_flop_pct": 100 * row["unit_flop_share"], "unit_time_pct": 100 * row["unit_time_share"]}
                 for row in rows], COLUMNS)
    return {"meta": dict(meta(device, dtype, args.rounds), max_tokens=args.max_tokens, steps_per_call=args.steps,
                         profile_steps=args.profile_steps, flags={name: study_flags(name) for name in models}),
            "batch": stats, "rows": rows}


COLUMNS = [
    ("model", "model", "{}"),
    ("ms_per_step", "ms / step", "{:.1f}"),
    ("vs_map", "/ map-n", "{:.3f}"),
    ("floor_vs_map", "floor", "{:.3f}"),
    ("unit_flop_pct", "unit FLOP %", "{:.1f}"),
    ("unit_time_pct", "unit time %", "{:.1f}"),
    ("share_unit_forward", "fwd %", "{:.1f}"),
    ("share_unit_backward", "bwd %", "{:.1f}"),
    ("share_parametrization", "param %", "{:.1f}"),
    ("share_dedupe", "dedupe %", "{:.1f}"),
    ("share_rest", "rest %", "{:.1f}"),
]
