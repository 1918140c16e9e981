"""Typed configuration: the single source of truth for every run.

YAML files and ``--set`` overrides are only serialisations of these dataclasses (see ``albef.config.io``).
Defaults are the official full-size values (``configs/*.yaml`` and ``configs/config_bert.json`` of the
official repository); presets in ``albef/config/presets/`` change only what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Task = Literal[
    "pretrain",
    "retrieval",
    "vqa",
    "nlvr_pretrain",
    "nlvr",
    "ve",
    "grounding",
    "winoground",
    "sugarcrepe",
    "aro",
]
Precision = Literal["fp32", "amp_bf16", "amp_fp16"]
"""Training and evaluation precision: fp32, or fp32 weights under ``torch.autocast`` to bf16/fp16. (The
benchmarks' weight-cast modes are named ``cast_bf16``/``cast_fp16``, see ``albef.workflows.bench``.)"""
Schedule = Literal["cosine", "staircase"]
BadImageMode = Literal["error", "skip"]


@dataclass
class VisionConfig:
    """ViT image encoder (timm ``VisionTransformer``, pre-norm, no head)."""

    image_res: int = 256
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    pos_embed_std: float = 0.02
    """Std of the (truncated normal) init of the position embeddings; timm's and DeiT's 0.02 by default. Only
    a fresh, randomly initialised ViT uses it. In the synthetic model 0.02 is about 12x weaker than a patch's
    content (std 0.25) in the first tokens, and pretraining leaves it so; 0.25 lets ITM learn where things
    stand (``reports/compositional/synthetic/README.md``)."""
    init: str | None = None
    """Start the ViT from these weights (the official recipe: ``deit_base_patch16_224``): a timm model name
    (its pretrained weights, downloaded by timm when asked) or a local file (``.pth``/``.safetensors``);
    the position embeddings are resized to ``image_res``. ``None``: random. Used when a run starts fresh."""


@dataclass
class TextConfig:
    """BERT-style text encoder (layers ``[0, fusion_layer)``) and fusion encoder (the rest).

    ``num_layers`` counts both stacks. ``encoder_width`` is the input width of the cross-attention key and
    value projections, i.e. the width of the image tokens they attend to.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    fusion_layer: int = 6
    encoder_width: int = 768
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    """Std of the normal init of linear/embedding weights when training from scratch (BERT's 0.02 suits
    width 768; small widths such as the synthetic preset's 128 need about 1/sqrt(width))."""
    init: str | None = None
    """Start the text and fusion layers from BERT weights (the official recipe: ``bert-base-uncased``): a hub
    name, a local Hugging Face directory (``model.safetensors`` or ``pytorch_model.bin``) or a weights file;
    layer ``i`` takes BERT's layer ``i``, cross-attention gets BERT's init. ``None``: random."""


@dataclass
class ModelConfig:
    """The ALBEF model: encoders, shared embedding space, momentum distillation and queues."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    embed_dim: int = 256
    temp: float = 0.07
    queue_size: int = 65536
    momentum: float = 0.995
    alpha: float = 0.4
    alpha_warmup: bool = True
    """Ramp alpha linearly over the first epoch (official ``warm_up``)."""
    distill: bool = True
    mlm_probability: float = 0.15
    itm_negatives: Literal["hard", "random"] = "hard"
    """How ITM negatives are drawn from the batch: ``hard`` = the official contrastive hard negatives
    (``softmax`` of the ITC similarities); ``random`` = uniform. The synthetic world uses ``random``: its
    captions are short and generic, so the most similar other caption is usually also true of the image and
    hard negatives are mostly mislabelled positives (ITM then never leaves chance level)."""
    ta_partners: Literal["hard", "random"] = "hard"
    """How text-assignment pretraining (``nlvr_pretrain``) draws each caption's partner images: ``hard`` = by
    image-image similarity, as the official code; ``random`` = uniformly among the batch's other images (the
    synthetic world, for the same reason as ``itm_negatives``)."""


@dataclass
class DataConfig:
    """Where the data lives and how it is batched.

    Paths are the official JSON files, unchanged. ``root`` is prepended to relative annotation paths;
    image paths inside the files are joined to ``image_root`` (or ``vqa_root``/``vg_root`` for VQA).
    """

    root: str = ""
    synthetic_size: str | None = None
    """If set (``small``/``medium``), ``root`` holds the embedded synthetic world of that size and any command
    generates it there on first use (seed ``synthetic_seed``)."""
    synthetic_seed: int = 0
    train_files: list[str] = field(default_factory=list)
    val_file: str | None = None
    test_file: str | None = None
    answer_list: str | None = None
    test_annotations: str | None = None
    """VQA: official VQA v2 annotations of ``test_file``'s questions; when set, the test split is also scored
    locally (overall / per question type / per answer type)."""
    det_file: str | None = None
    """Grounding: the proposals, ``{"<image id>": [[x, y, w, h, ...], ...]}`` (``dets.json``)."""
    refs_file: str | None = None
    """Grounding: the REFER refs, ``refs(unc).p`` (read without running any pickled code) or its JSON form."""
    instances_file: str | None = None
    """Grounding: the REFER ``instances.json`` (image sizes and the refs' boxes)."""
    itm_text_negatives: str | None = None
    """Pretraining: a JSON file ``{image: [item, ...]}``, an item being a caption false of the image or a pair
    ``{"caption": <true of it>, "negative": <false of it, made from that caption>}``; each sample of such an
    image draws one item: the false caption joins ITM as an extra negative and a pair's true caption as an extra
    positive (NegCLIP-style hard negatives; paired, ITM cannot learn to reject a sentence form instead of
    looking). Not in the official recipe and off by default; the synthetic world writes
    ``pretrain_negatives.json`` (pairs: swapped attributes and objects, wrong relations, counts, added
    objects) for it."""
    split_files: dict[str, str] = field(default_factory=dict)
    """Benchmarks: the annotation file of each split or subset (SugarCrepe: ``replace_obj`` ... ``swap_att``; ARO:
    ``vg_relation``, ``vg_attribution``, ``coco_order``, ``flickr_order``)."""
    split_image_roots: dict[str, str] = field(default_factory=dict)
    """Benchmarks: the image root of a split where it is not ``image_root`` (ARO's Order sets read COCO and
    Flickr30K images)."""
    excluded_relations: str | None = None
    """ARO VG-Relation: a file naming, one a line, the relations its macro accuracy leaves out (the ARO paper
    leaves out those whose two argument orders mean the same; ``albef data prepare aro`` writes the list)."""
    image_root: str = ""
    vqa_root: str = ""
    vg_root: str = ""
    tokenizer: str = "bert-base-uncased"
    """A hub name or a local directory holding a WordPiece ``vocab.txt`` (and optionally tokenizer files)."""
    max_words: int = 30
    max_tokens_train: int | None = 25
    """Token truncation for training texts (``None``: pad to the longest, never truncate)."""
    max_tokens_eval: int | None = 30
    batch_size_train: int = 64
    batch_size_test: int = 64
    num_workers: int = 4
    pin_memory: bool = True
    persistent_workers: bool = True
    augment: bool = True
    """Train-time augmentation (random resized crop, horizontal flip, RandAugment), as the official recipe.
    The synthetic presets turn it off: flips and crops would falsify their captions' spatial relations."""
    bad_images: BadImageMode = "error"
    """``error`` stops at the first unreadable image; ``skip`` drops it, counts it and reports it at the end."""


@dataclass
class OptimConfig:
    """AdamW with the official parameter groups and a warm-up + cosine schedule."""

    lr: float = 1e-4
    weight_decay: float = 0.02
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    epochs: int = 30
    schedule: Schedule = "cosine"
    """``cosine``: per-step linear warm-up then cosine to ``min_lr``. ``staircase``: the official
    epoch-based schedule, whose warm-up advances every 100 iterations (for parity)."""
    warmup_lr: float = 1e-5
    warmup_epochs: int = 20
    """``staircase`` warm-up length, in the official unit (steps of 100 iterations)."""
    warmup_steps: int = 2000
    """``cosine`` warm-up length in optimizer steps."""
    min_lr: float = 1e-5
    accum_steps: int = 1
    clip_grad_norm: float | None = None
    max_steps: int | None = None
    """Stop after this many optimizer steps (``None``: run every epoch)."""
    loss_weights: dict[str, float] = field(default_factory=dict)
    """Weight of each loss in the optimised sum, by name (pretraining: ``itc``, ``itm``, ``mlm``); a loss not
    named weighs 1, as in the official recipe (plain sum), and a name the task has no loss of is an error.
    Logs show every loss unweighted (and ``loss`` as their plain sum)."""


@dataclass
class EvalConfig:
    """Evaluation protocol knobs."""

    k_test: int = 256
    """Retrieval: candidates re-ranked by ITM per query. VQA: answers re-ranked per question."""
    text_batch_size: int = 256
    max_question_words: int = 50
    gradcam_mode: Literal["itm", "itc"] = "itm"
    """Grounding: Grad-CAM of the ITM head through a fusion layer's cross-attention (official), or of the ITC
    similarity through a ViT block's attention."""
    gradcam_block: int = 8
    """Grounding: the layer of the Grad-CAM: a text-encoder layer index in ``itm`` mode (8: the third fusion
    layer, the official default), a ViT block in ``itc`` mode."""


@dataclass
class RuntimeConfig:
    """Where and how a run executes."""

    device: str = "auto"
    precision: Precision = "fp32"
    seed: int = 42
    output_dir: str = "runs/default"
    compile: bool = False
    """``torch.compile`` the image encoders and every text/fusion layer (students and teachers) before the run
    (``albef.engine.compile``); parameter names and checkpoints are unchanged."""
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = (
        "default"
    )
    """The ``torch.compile`` mode used with ``compile: true``."""
    deterministic: bool | None = None
    """Deterministic algorithms (``albef.engine.determinism``): bit-identical repeats of a run at any fixed
    thread count, and exact resume. ``None``: on for CPU runs, off on CUDA; ``true`` on CUDA also sets the
    cuBLAS workspace and deterministic attention kernels, and an op with no deterministic kernel is an
    error that names it."""
    log_every: int = 50
    """Without a progress bar (``--no-progress``, or on ranks other than 0's file logs), print one status line
    every N optimizer steps to stderr (0: never). ``metrics.jsonl`` records every step regardless."""
    tensorboard: bool = False
    """Also write every training record (losses, learning rate, throughput, validation) as TensorBoard scalars to
    ``<run>/tensorboard`` (needs the ``tensorboard`` package)."""
    wandb_project: str | None = None
    """Also log every training record to this Weights & Biases project (needs ``wandb``; off by default)."""
    checkpoint_every: int = 0
    """Save a checkpoint every N optimizer steps (0: only at epoch end)."""
    keep_last: int = 2


@dataclass
class ExperimentConfig:
    """Everything a command needs; one YAML file serialises one of these."""

    name: str = "pretrain"
    task: Task = "pretrain"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
