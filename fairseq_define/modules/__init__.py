from fairseq_define.modules.define_embedding import DefineEmbedding
from fairseq_define.modules.define_unit import DefineUnit, HGTLayerSpec, hgt_schedule
from fairseq_define.modules.group_linear import GroupLinear, from_group_major, regroup, to_group_major

__all__ = [
    "DefineEmbedding",
    "DefineUnit",
    "GroupLinear",
    "HGTLayerSpec",
    "from_group_major",
    "hgt_schedule",
    "regroup",
    "to_group_major",
]
