"""Checkpoints: reading and atomic saving, official <-> our layouts, task conversions, strict loading, and
initialisation from BERT / DeiT weights.

Importing this package loads no weights and touches no network; ``transformers`` is imported only inside
:func:`init_text_from_bert` when it is given a directory or hub name.
"""

from albef.checkpoint.convert import (
    load_checkpoint,
    resize_pos_embeds,
    teacher_names,
)
from albef.checkpoint.init import bert_init_, init_text_from_bert, init_vision_from_deit
from albef.checkpoint.io import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    atomic_torch_save,
    atomic_write,
    read_state_dict,
    save_state_dict,
    unwrap_state_dict,
)
from albef.checkpoint.layout import (
    OFFICIAL_CLASS,
    TASKS,
    detect_layout,
    detect_task,
    official_key,
    official_keys,
    official_to_ours,
    ours_key,
    ours_to_official,
    split_layout,
)
from albef.checkpoint.remap import CONVERSIONS, Remap, remap_state_dict
from albef.checkpoint.strict import (
    CheckpointMismatchError,
    LoadReport,
    check_state_dict,
    load_state_dict_strict,
    tie_groups,
)

__all__ = [
    "CONVERSIONS",
    "OFFICIAL_CLASS",
    "TASKS",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "LoadReport",
    "Remap",
    "UnsafeCheckpointError",
    "atomic_torch_save",
    "atomic_write",
    "bert_init_",
    "check_state_dict",
    "detect_layout",
    "detect_task",
    "init_text_from_bert",
    "init_vision_from_deit",
    "load_checkpoint",
    "load_state_dict_strict",
    "official_key",
    "official_keys",
    "official_to_ours",
    "ours_key",
    "ours_to_official",
    "read_state_dict",
    "remap_state_dict",
    "resize_pos_embeds",
    "save_state_dict",
    "split_layout",
    "teacher_names",
    "tie_groups",
    "unwrap_state_dict",
]
