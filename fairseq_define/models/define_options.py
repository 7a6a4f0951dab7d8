"""The `--define-*` options of the DeFINE models, generated from `DefineConfig`, and the embedding they build.

`DefineEmbeddingConfig` is a FairseqDataclass with one `define_<name>` field per `DefineConfig` field (flags,
help strings, choices and defaults all come from `DefineConfig`); fields that the host model owns (the adaptive
Map's `--adaptive-input-*`) are not repeated. `define_config(args)` turns the parsed flags back into a
`DefineConfig`, whose errors name the flag.
"""

from contextlib import nullcontext
from dataclasses import MISSING, fields, make_dataclass
from dataclasses import field as dataclass_field
from typing import Optional

from omegaconf import OmegaConf, open_dict

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.utils import safe_getattr

from fairseq_define.modules.define_config import PRESET_FIELDS, PRESETS, DefineConfig, preset_options
from fairseq_define.modules.define_embedding import DefineEmbedding


def _flag_fields():
    """(DefineConfig field, fairseq attribute name, inverted) for every field that has a --define-* flag."""
    for f in fields(DefineConfig):
        if f.metadata["flag"]:  # supplied by the host model's own flags
            continue
        inverted = f.metadata["inverted_flag"]
        attribute = (inverted or "--define-" + f.name.replace("_", "-"))[2:].replace("-", "_")
        yield f, attribute, bool(inverted)


def _fairseq_field(f, inverted: bool):
    help_text = "DeFINE: " + f.metadata["help"]
    if inverted:
        return bool, dataclass_field(default=False, metadata={"help": "DeFINE: do not " + f.metadata["help"]})
    kind = ChoiceEnum(list(f.metadata["choices"])) if f.metadata["choices"] else (f.metadata["cli_type"] or f.type)
    default = f.default
    if f.name in PRESET_FIELDS and kind is not bool:  # unset (None) until a preset or DefineConfig's default fills it
        help_text += f" (default: the preset's, else {f.default})"
        default = None
    if default is None:
        kind = Optional[kind] if f.metadata["choices"] else Optional[int] if f.type in (int, Optional[int]) \
            else Optional[str]
    return kind, dataclass_field(default=default, metadata={"help": help_text})


def _preset_field():
    help_text = ("DeFINE: set every unit option of a recipe at once (`preset_options`, docs/models.md#presets): paper "
                 "(the paper's unit) or recommended (the authors' unit with steps by fan-in). A --define-* flag given "
                 "too overrides the preset's value. Default: the model family's (DEFAULT_PRESETS), unless "
                 "--define-transform is given")
    return "define_preset", Optional[ChoiceEnum(list(PRESETS))], dataclass_field(default=None,
                                                                                 metadata={"help": help_text})


DefineEmbeddingConfig = make_dataclass(
    "DefineEmbeddingConfig",
    [_preset_field(), *[(attribute, *_fairseq_field(f, inverted)) for f, attribute, inverted in _flag_fields()]],
    bases=(FairseqDataclass,),
)
DefineEmbeddingConfig.__doc__ = "The --define-* flags of every DeFINE model (generated from DefineConfig)."


def define_field(attribute: str, default):
    """The DefineEmbeddingConfig field `attribute` (e.g. "define_expand_dim") with another default: for a model
    config whose own architecture sizes the unit differently."""
    original = DefineEmbeddingConfig.__dataclass_fields__[attribute]
    return dataclass_field(default=default, metadata=original.metadata)


def writable(args):
    """A context in which `args` (a Namespace, or the struct DictConfig that fairseq builds a dataclass model from)
    takes new attributes: for the architecture functions that `build_model` applies."""
    return open_dict(args) if OmegaConf.is_config(args) else nullcontext()


def derive_unset(args, **values):
    """Set each attribute that is missing or None (a derived option left unset) to its derived value."""
    for name, value in values.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def set_dataclass_defaults(args, config_class):
    """Fill every attribute of `args` that an architecture or the user left unset (missing or None) with its default
    in `config_class`: the legacy argparse path then builds the model the dataclass describes. Interpolated
    defaults (`II("task.…")`) are left to fairseq."""
    for f in fields(config_class):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        if f.name.startswith("_") or default is MISSING or (isinstance(default, str) and default.startswith("${")):
            continue
        setattr(args, f.name, safe_getattr(args, f.name, default))


def set_define_defaults(args):
    """Fill every define_* attribute that an architecture or the user did not set with its default."""
    set_dataclass_defaults(args, DefineEmbeddingConfig)


# The preset each model family builds when neither --define-preset nor --define-transform is given: the one that
# measured best in the family's study (docs/results.md). In translation the paper's unit beat the recommended one.
DEFAULT_PRESETS = {"define_transformer_lm": "recommended", "define_transformer_xl": "recommended",
                   "define_lstm_lm": "recommended", "define_transformer": "paper"}


def chosen_preset(args, family: str) -> Optional[str]:
    """The preset that builds the unit: --define-preset; else, unless --define-transform is given (a unit configured
    by hand, or a checkpoint from before presets, whose options are all stored), the family's default."""
    preset = getattr(args, "define_preset", None)
    if preset is None and getattr(args, "define_transform", None) is None:
        preset = DEFAULT_PRESETS[family]
    return None if preset is None else str(preset)


def paper_sizes(args, family: str, **sizes):
    """An architecture's sizes for the paper's unit (e.g. define_expand_dim=4096): set where unset, unless another
    preset builds the unit (its sizes then follow the model width)."""
    if chosen_preset(args, family) in (None, "paper"):
        for name, value in sizes.items():
            setattr(args, name, safe_getattr(args, name, value))


def define_config(args, model_dim: int, family: str, adaptive_cutoff=None, adaptive_factor=4.0,
                  input_dim: Optional[int] = None) -> DefineConfig:
    """The DefineConfig that the parsed `--define-*` flags (and the host's adaptive-input flags) describe for a
    model `model_dim` wide: the flags given, then the preset's options (`chosen_preset`), then DefineConfig's
    defaults (`input_dim`: d, where the model sets it). A checkpoint stores the flags as given, so a model is
    rebuilt the same way at load."""
    set_define_defaults(args)
    preset = chosen_preset(args, family)
    values = {}
    for f, attribute, inverted in _flag_fields():
        value = getattr(args, attribute)
        if inverted:
            value = not value
        elif value is not None and f.metadata["choices"]:
            value = str(value)
        unset = value is None or (f.name in PRESET_FIELDS and value is False)  # a store-true flag not given
        if not unset:
            values[f.name] = value
    if input_dim is not None:
        values["input_dim"] = input_dim
    d = values.get("input_dim") or values.get("map_dim") or DefineConfig.map_dim
    options = {**preset_options(preset, model_dim, d), **values} if preset else values
    return DefineConfig(adaptive_cutoff=adaptive_cutoff, adaptive_factor=adaptive_factor, **options)


def unit_input_dim(args) -> int:
    """d, the width of the Map's output: --define-input-dim, else --define-map-dim."""
    set_define_defaults(args)
    return args.define_input_dim or args.define_map_dim


def build_define_embedding(args, dictionary, embed_dim, family: str, adaptive_cutoff=None, adaptive_factor=4.0,
                           shared_map=None) -> DefineEmbedding:
    """A DefineEmbedding for `dictionary` with output width `embed_dim` from the flags in `args` (over the Map of
    `shared_map`, another DefineEmbedding, if given). A bad value raises a one-line error naming the flag."""
    config = define_config(args, embed_dim, family, adaptive_cutoff, adaptive_factor)
    if safe_getattr(args, "quant_noise_pq", 0) or safe_getattr(args, "decoder_quant_noise_pq", 0) \
            or safe_getattr(args, "encoder_quant_noise_pq", 0):
        raise ValueError("--quant-noise-pq is not supported by the DeFINE models (the Map and the unit have no "
                         "quantization noise); train without it")
    return DefineEmbedding(len(dictionary), dictionary.pad(), embed_dim, config=config, shared_map=shared_map)


def match_host_scale(stack):
    """Set the `embed_scale` of `stack` (a fairseq encoder or decoder, or the Transformer-XL decoder) to 1 when its
    DefineEmbedding's output enters the model unscaled (the authors' unit: `DefineEmbedding.wants_host_scale`)."""
    if not stack.embed_tokens.wants_host_scale:
        stack.embed_scale = 1.0
    return stack
