"""The `--define-*` options shared by the DeFINE language and translation models, and the embedding they build."""

import re
from dataclasses import dataclass, field, fields

from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.utils import safe_getattr

from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.modules.define_unit import ACTIVATIONS, NORMS, TRANSFORMS


@dataclass
class DefineEmbeddingConfig(FairseqDataclass):
    define_map_dim: int = field(default=128, metadata={"help": "DeFINE: Map (lookup) dimension n"})
    define_expand_dim: int = field(default=1024, metadata={"help": "DeFINE: width k of the last HGT layer"})
    define_depth: int = field(default=3, metadata={"help": "DeFINE: number N of HGT layers"})
    define_max_groups: int = field(
        default=4, metadata={"help": "DeFINE: groups of the first HGT layer (a power of two; halves every layer)"}
    )
    define_norm: ChoiceEnum(NORMS) = field(
        default="ln", metadata={"help": "DeFINE: normalisation between HGT layers (per-group LayerNorm or none)"}
    )
    define_activation: ChoiceEnum(list(ACTIVATIONS)) = field(
        default="gelu", metadata={"help": "DeFINE: activation between HGT layers"}
    )
    define_dropout: float = field(default=0.0, metadata={"help": "DeFINE: dropout between HGT layers"})
    define_reduce_skip: bool = field(default=False, metadata={"help": "DeFINE: also feed e to Reduce ([h ; e] -> m)"})
    define_transform: ChoiceEnum(TRANSFORMS) = field(
        default="define", metadata={"help": "DeFINE: the Expand transform (define, or an ablation of the paper)"}
    )
    define_no_dedupe: bool = field(
        default=False, metadata={"help": "DeFINE: run the unit on every position instead of the batch's unique ids"}
    )
    define_no_cache: bool = field(
        default=False, metadata={"help": "DeFINE: do not cache the V x m table of unit outputs at inference"}
    )


def set_define_defaults(args):
    """Fill every define_* attribute that an architecture or the user did not set with its default."""
    for f in fields(DefineEmbeddingConfig):
        setattr(args, f.name, safe_getattr(args, f.name, f.default))


# DefineEmbedding argument -> the command-line flag that sets it, for error messages.
FLAGS = {
    "map_dim": "--define-map-dim",
    "expand_dim": "--define-expand-dim",
    "depth": "--define-depth",
    "max_groups": "--define-max-groups",
    "dropout": "--define-dropout",
    "adaptive_cutoff": "--adaptive-input-cutoff",
    "adaptive_factor": "--adaptive-input-factor",
}


def build_define_embedding(
    args, dictionary, embed_dim, adaptive_cutoff=None, adaptive_factor=4.0, shared_map=None
) -> DefineEmbedding:
    """A DefineEmbedding for `dictionary` with output dim `embed_dim`, from the define_* options in `args`
    (over `shared_map`, another embedding's Map, if given).

    A bad value raises a one-line ValueError that names the command-line flag.
    """
    set_define_defaults(args)
    try:
        return DefineEmbedding(
            len(dictionary),
            dictionary.pad(),
            map_dim=args.define_map_dim,
            expand_dim=args.define_expand_dim,
            depth=args.define_depth,
            max_groups=args.define_max_groups,
            embedding_dim=embed_dim,
            norm=str(args.define_norm),
            activation=str(args.define_activation),
            dropout=args.define_dropout,
            reduce_skip=args.define_reduce_skip,
            transform=str(args.define_transform),
            adaptive_cutoff=adaptive_cutoff,
            adaptive_factor=adaptive_factor,
            dedupe=not args.define_no_dedupe,
            cache=not args.define_no_cache,
            shared_map=shared_map,
        )
    except ValueError as error:
        message = str(error)
        for name, flag in FLAGS.items():
            message = re.sub(rf"(?<![\w-]){name}=", f"{flag}=", message)
        raise ValueError(message) from None
