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

from fairseq_define.modules.define_config import DefineConfig
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
    if f.default is None:
        kind = Optional[int]
    return kind, dataclass_field(default=f.default, metadata={"help": help_text})


DefineEmbeddingConfig = make_dataclass(
    "DefineEmbeddingConfig",
    [(attribute, *_fairseq_field(f, inverted)) for f, attribute, inverted in _flag_fields()],
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


def define_config(args, adaptive_cutoff=None, adaptive_factor=4.0) -> DefineConfig:
    """The DefineConfig that the parsed `--define-*` flags (and the host's adaptive-input flags) describe."""
    set_define_defaults(args)
    values = {}
    for f, attribute, inverted in _flag_fields():
        value = getattr(args, attribute)
        values[f.name] = (not value) if inverted else (str(value) if f.metadata["choices"] else value)
    return DefineConfig(adaptive_cutoff=adaptive_cutoff, adaptive_factor=adaptive_factor, **values)


def unit_input_dim(args) -> int:
    """d, the width of the Map's output: --define-input-dim, else --define-map-dim."""
    set_define_defaults(args)
    return args.define_input_dim or args.define_map_dim


def build_define_embedding(args, dictionary, embed_dim, adaptive_cutoff=None, adaptive_factor=4.0,
                           shared_map=None) -> DefineEmbedding:
    """A DefineEmbedding for `dictionary` with output width `embed_dim` from the flags in `args` (over the Map of
    `shared_map`, another DefineEmbedding, if given). A bad value raises a one-line error naming the flag."""
    config = define_config(args, adaptive_cutoff, adaptive_factor)
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
