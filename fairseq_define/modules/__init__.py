"""Pure-PyTorch modules (no fairseq import): the GLT kernel, the DeFINE unit, the embedding and its config."""

from fairseq_define.modules.define_config import DefineConfig, HGTLayerSpec
from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.modules.define_unit import DefineUnit
from fairseq_define.modules.group_linear import GroupLinear, from_group_major, regroup, to_group_major
from fairseq_define.modules.tied_map_output import TiedMapOutput

__all__ = [
    "DefineConfig",
    "DefineEmbedding",
    "DefineUnit",
    "GroupLinear",
    "HGTLayerSpec",
    "TiedMapOutput",
    "from_group_major",
    "regroup",
    "to_group_major",
]
