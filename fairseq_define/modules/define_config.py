"""DefineConfig: every option of a DeFINE embedding, in one place.

The modules take a `DefineConfig`; the fairseq models generate their `--define-*` flags from its fields
(`fairseq_define.models.define_options`), and every validation error names the flag from the field's metadata,
so one option is spelled once. Pure Python: no torch or fairseq import.

    cfg = DefineConfig(map_dim=128, expand_dim=1024, depth=3, max_groups=4)
    emb = DefineEmbedding(num_embeddings=V, padding_idx=1, embedding_dim=512, config=cfg)
"""

from dataclasses import dataclass, field, fields
from typing import List, Optional, Tuple, Union

TRANSFORMS = ("define", "define-nomix", "hgt", "glt", "linear", "authors", "none")
PAPER_TRANSFORMS = ("define", "define-nomix", "hgt", "glt", "linear")  # built by DefineUnit from `schedule()`
NORMS = ("none", "ln")
ACTIVATIONS = ("none", "gelu", "swish", "relu")
OUTPUT_SCALES = ("factor", "weights")
FAN_IN = "fan-in"  # the per-matrix step rule of --define-unit-lr-scale
PRESETS = ("paper", "recommended")


def preset_options(name: str, model_dim: int, input_dim: int) -> dict:
    """The unit options of preset `name` for a model `model_dim` (m) wide whose unit reads `input_dim` (d) wide
    inputs, as DefineConfig fields.

    - paper: the paper's unit (HGT with the DeFINE skip, LayerNorm + GELU, output calibrated to std m^-0.5, plain
      parameters); its sizes are the architecture's (or DefineConfig's defaults).
    - recommended: the authors' unit (docs/authors-unit.md), k = 4m, N = 3, g_max = 32, LayerNorm + swish, each
      weight matrix's Adam step by fan-in; its output enters the model as it is (no host scale).
    (g_max is capped at the largest power of two dividing d, which the authors' unit requires; with N = 3 the
    groups are 4, 2, 1 for every g_max >= 4.)
    """
    if name == "paper":
        return {"transform": "define", "norm": "ln", "activation": "gelu", "unit_lr_scale": 1.0,
                "output_scale": "factor", "residual": False, "host_scale": False}
    if name == "recommended":
        return {"transform": "authors", "expand_dim": 4 * model_dim, "depth": 3,
                "max_groups": min(32, input_dim & -input_dim), "norm": "ln",
                "activation": "swish", "unit_lr_scale": FAN_IN, "residual": False,
                "host_scale": False}
    raise ValueError(f"--define-preset={name} is not one of {', '.join(PRESETS)}")


# the fields some preset sets
PRESET_FIELDS = tuple(dict.fromkeys(k for name in PRESETS for k in preset_options(name, 2, 2)))


def option(default, help: str, flag: Optional[str] = None, choices=None, inverted_flag: Optional[str] = None,
           cli_type=None):
    """A config field, set by the flag `--define-<name>`; or, with `inverted_flag`, by a store-true flag that sets it
    to False (e.g. `--define-no-cache`); or, with `flag`, by a flag the host model owns (fairseq's own, e.g.
    `--adaptive-input-cutoff`), for which no `--define-*` flag is generated. `cli_type`: the type the command line
    parses the value as, when it is not the field's own (a number-or-name field takes a string)."""
    metadata = {"help": help, "flag": flag, "choices": choices, "inverted_flag": inverted_flag, "cli_type": cli_type}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class HGTLayerSpec:
    """One Expand layer: a GLT `in_features -> out_features` with `groups` groups."""

    in_features: int
    out_features: int
    groups: int


@dataclass(frozen=True)
class DefineConfig:
    # Map: token -> e (width n), optionally projected n -> d
    map_dim: int = option(128, "Map (lookup) width n")
    input_dim: Optional[int] = option(
        None, "width d of the unit's input: the Map's n-dim output is projected n -> d (default: n, no projection); "
        "with --define-transform none, the width handed to the model (then d -> m if d != m)")
    map_dropout: float = option(0.0, "dropout on the Map's output e (the authors' code drops it)")
    adaptive_cutoff: Optional[Tuple[int, ...]] = option(
        None, "band cutoffs of an adaptive-input Map (fairseq's AdaptiveInput); none: a lookup table",
        flag="--adaptive-input-cutoff")
    adaptive_factor: float = option(4.0, "band-width divisor of the adaptive Map", flag="--adaptive-input-factor")
    # the unit: Expand (HGT) -> Reduce
    transform: str = option(
        "define", "the unit: define (HGT + DeFINE skip), an ablation of the paper (define-nomix, hgt, glt, linear), "
        "authors (the unit of the authors' released code, sacmehta/delight --define-iclr: docs/authors-unit.md), "
        "or none (no unit: the Map's d-dim output goes to the model, the control of every comparison)",
        choices=TRANSFORMS)
    expand_dim: int = option(1024, "width k of the last HGT layer (authors: k = n * width multiplier)")
    depth: int = option(3, "number N of HGT layers")
    max_groups: int = option(4, "groups g_max of the first HGT layer (a power of two; halves every layer; authors: "
                                "the cap G of the authors' cycling schedule)")
    norm: str = option("ln", "normalisation between HGT layers (per-group LayerNorm or none)", choices=NORMS)
    activation: str = option("gelu", "activation between HGT layers (the authors' architectures use swish)",
                             choices=ACTIVATIONS)
    dropout: float = option(0.0, "dropout between HGT layers (authors: after every layer of the unit)")
    reduce_skip: bool = option(False, "also feed e to Reduce ([h ; e] -> m)")
    residual: bool = option(
        False, "start as the control: the output is control(e) + gate * unit(e), where control(e) is what "
        "--define-transform none computes (the Map's d-dim output, projected d -> m if d != m) and gate is a "
        "learnable m-vector initialised to 0, so the model starts exactly as its control")
    output_scale: str = option(
        "factor", "how the unit's output is brought to the scale fairseq expects (std m^-0.5 at init): a fixed "
        "factor after Reduce (factor), or folded into Reduce's initial weights (weights, the v1 behaviour); factor "
        "trains better (docs/design.md#design-notes)", choices=OUTPUT_SCALES)
    host_scale: bool = option(
        False, "with --define-transform authors: bring the unit's output (O(1) per coordinate) to the std of an "
        "embedding table, m^-0.5 over the vocabulary at init, by a fixed factor, and let the host model apply its "
        "own embedding scale (the Transformers' sqrt(m); none in the AWD-LSTM), so every host gets the input scale "
        "its control gets; a diagnosis option, in no preset (it trained worse in the AWD-LSTM: docs/results.md)")
    unit_lr_scale: Union[float, str] = option(
        1.0, "relative step size of the unit's parameters, a number c or fan-in: each is stored divided by its scale "
        "and multiplied back in the forward (a torch parametrization; same function and initial values), so "
        "Adam-type optimizers, whose step ignores the gradient's scale, move it that many times as far as the rest "
        "of the model (SGD: the square). c: every unit parameter (1: the paper's plain parameters); fan-in: each "
        "weight matrix by min(1, d / F), F its per-group fan-in and d the unit's input width (muP's Adam rule for "
        "hidden matrices, with d as the base width), biases and LayerNorm at 1", cli_type=str)
    # work skipping, beyond the paper
    dedupe: bool = option(True, "run the unit once per unique id of the batch",
                          inverted_flag="--define-no-dedupe")
    cache: bool = option(True, "at inference (after prepare_for_inference_), look up a V x m table of unit outputs",
                         inverted_flag="--define-no-cache")
    cache_chunk: int = option(16384, "ids per chunk when building the inference table (bounds its peak memory)")

    @classmethod
    def preset(cls, name: str, model_dim: int, **options) -> "DefineConfig":
        """The config of preset `name` (`preset_options`) for a model `model_dim` wide; `options` (e.g. map_dim=64)
        set the other fields or override the preset's."""
        input_dim = options.get("input_dim") or options.get("map_dim") or cls.map_dim
        return cls(**{**preset_options(name, model_dim, input_dim), **options})

    @staticmethod
    def flag(name: str) -> str:
        """The command-line flag that sets field `name`."""
        metadata = next(f.metadata for f in fields(DefineConfig) if f.name == name)
        return metadata["inverted_flag"] or metadata["flag"] or "--define-" + name.replace("_", "-")

    def error(self, name: str, message: str) -> ValueError:
        """A one-line error about field `name` that names its flag and value."""
        return ValueError(f"{self.flag(name)}={_show(getattr(self, name))} {message}")

    @property
    def unit_input_dim(self) -> int:
        """d: the width of the unit's input (the Map's output)."""
        return self.map_dim if self.input_dim is None else self.input_dim

    @property
    def has_unit(self) -> bool:
        return self.transform != "none"

    @property
    def is_authors(self) -> bool:
        """The authors' unit (and their Map treatment: sqrt(n) on a lookup Map, locked Map dropout)."""
        return self.transform == "authors"

    def __post_init__(self):
        if self.adaptive_cutoff is not None:
            object.__setattr__(self, "adaptive_cutoff", tuple(int(c) for c in self.adaptive_cutoff))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                raise self.error(f.name, f"is not one of {', '.join(f.metadata['choices'])}")
        for name in ("map_dim", "expand_dim", "depth", "max_groups", "cache_chunk"):
            if not _positive_int(getattr(self, name)):
                raise self.error(name, "must be a positive integer")
        if self.input_dim is not None and not _positive_int(self.input_dim):
            raise self.error("input_dim", "must be a positive integer")
        for name in ("dropout", "map_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise self.error(name, "must be in [0, 1)")
        object.__setattr__(self, "unit_lr_scale", self._parse_step_scale(self.unit_lr_scale))
        if self.adaptive_factor <= 0:
            raise self.error("adaptive_factor", "must be positive")
        if self.residual and not self.has_unit:
            raise self.error("residual", f"adds a unit to the control's path; {self.flag('transform')}=none has none")
        if self.host_scale and not self.is_authors:
            raise self.error("host_scale", f"applies to {self.flag('transform')}=authors only (the paper's unit "
                                           f"calibrates its output to the host's scale already)")
        if self.is_authors:
            self._check_authors()
        elif self.has_unit:
            self.schedule()  # raises on widths or groups that do not fit

    def _parse_step_scale(self, value) -> Union[float, str]:
        """--define-unit-lr-scale: a positive number (given as a number or a string) or "fan-in"."""
        if value == FAN_IN:
            return FAN_IN
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.error("unit_lr_scale", f"is neither a positive number nor {FAN_IN}") from None
        if not number > 0 or number == float("inf"):
            raise self.error("unit_lr_scale", "must be positive")
        return number

    def _check_authors(self):
        """What the authors' DExTraUnit asserts (N > 1, n even, n % G == 0, with n its input width: our d) and
        what would make their code exit: the rest depends on m and is checked by `authors_unit.authors_layers`."""
        d, d_name = self.unit_input_dim, "map_dim" if self.input_dim is None else "input_dim"
        if self.depth < 2:
            raise self.error("depth", f"must be >= 2 with {self.flag('transform')}=authors (its last GLT layer maps "
                                      f"to m)")
        if d % 2:
            raise self.error(d_name, f"must be even with {self.flag('transform')}=authors (the authors' unit asserts "
                                     f"it)")
        if d % self.max_groups:
            raise self.error(d_name, f"must be divisible by {self.flag('max_groups')}={self.max_groups} with "
                                     f"{self.flag('transform')}=authors (the authors' unit asserts it)")

    def schedule(self) -> List[HGTLayerSpec]:
        """Widths and groups of the N Expand layers (docs/design.md#design-notes), every divisibility rule checked.

        Widths start from d (the unit's input). Example (MT config): d=128, k=1024, N=3, g_max=4 gives groups
        [4, 2, 1], inputs [128, 560, 856], outputs [432, 728, 1024].
        """
        if self.transform not in PAPER_TRANSFORMS:
            raise ValueError(f"{self.flag('transform')}={self.transform} has no HGT schedule of the paper")
        d, k, depth, g_max = self.unit_input_dim, self.expand_dim, self.depth, self.max_groups
        d_name = "map_dim" if self.input_dim is None else "input_dim"
        if g_max & (g_max - 1):
            raise self.error("max_groups", f"must be a power of two (the group count halves every layer), "
                                           f"e.g. {1 << (g_max.bit_length() - 1)}")
        if k < d:
            raise self.error("expand_dim", f"must be >= the unit's input width {d} ({self.flag(d_name)}): "
                                           f"the HGT expands d -> k")

        def groups_of(layer: int) -> int:  # 1-based; layer depth + 1 is Reduce (one group)
            if layer > depth or self.transform == "linear":
                return 1
            if self.transform == "glt":
                return g_max
            return max(g_max >> (layer - 1), 1)

        specs, previous = [], d
        for layer in range(1, depth + 1):
            groups = groups_of(layer)
            if layer == depth:
                width = k
                if width % groups:
                    raise self.error("expand_dim", f"must be divisible by the {groups} groups of HGT layer {layer}; "
                                                   f"use a multiple of {groups}, or fewer groups or more layers")
            else:
                quantum = max(groups, groups_of(layer + 1), 8)
                exact = d * depth + layer * (k - d)  # N * (d + l (k - d) / N)
                width = -(-exact // (depth * quantum)) * quantum
            mixes = layer >= 2 and self.transform in ("define", "define-nomix")
            in_features = previous + d if mixes else previous
            if (layer == 1 or (mixes and self.transform == "define")) and d % groups:
                raise self.error(d_name, f"must be divisible by the {groups} groups of HGT layer {layer} "
                                         f"({self.flag('max_groups')}={g_max}); use a multiple of {groups} "
                                         f"or fewer groups")
            if in_features % groups:
                raise self.error(d_name, f"gives HGT layer {layer} an input width {in_features} that its "
                                         f"{groups} groups do not divide; use a multiple of {groups}")
            specs.append(HGTLayerSpec(in_features, width, groups))
            previous = width
        return specs


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _show(value) -> str:
    """A value as an error message shows it: on one line (a string with unprintable characters as its repr)."""
    if isinstance(value, tuple):
        return ",".join(map(_show, value))
    text = str(value)
    return text if text.isprintable() else repr(value)
