"""Named sizes of the synthetic world (``albef data synth --size``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SizeSpec:
    """How much of each task a world holds. Changing a preset changes the data: bump ``WORLD_VERSION``.

    Attributes:
        description: One line for ``albef ls synthetic-sizes``.
        pretrain_images: Images in ``pretrain.json``.
        pretrain_captions: Captions per pretraining image.
        retrieval_images: (train, val, test) images of the Karpathy-style retrieval splits.
        captions_per_image: Captions per retrieval image (5, as COCO and Flickr30K).
        vqa_images: (train, test) images of the VQA splits.
        questions_per_image: VQA questions per image.
        vg_images: Images of the Visual-Genome-style extra VQA training records.
        nlvr_sets: (train, dev, test) NLVR² sets; each is one sentence judged on 1-4 image pairs.
        ve_images: (train, dev, test) SNLI-VE images; each gets 6 hypotheses, 2 per class.
        noisy_caption_fraction: Share of pretraining captions swapped for another image's caption.
        grounding_images: (train, val, test) images with referring expressions, boxes and proposals.
        probe_sizes: (Winoground-style examples per kind, SugarCrepe-style images) of the compositional probes.
    """

    description: str
    pretrain_images: int
    pretrain_captions: int
    retrieval_images: tuple[int, int, int]
    captions_per_image: int
    vqa_images: tuple[int, int]
    questions_per_image: int
    vg_images: int
    nlvr_sets: tuple[int, int, int]
    ve_images: tuple[int, int, int]
    noisy_caption_fraction: float = 0.1
    grounding_images: tuple[int, int, int] = (0, 0, 0)
    probe_sizes: tuple[int, int] = (0, 0)


SIZES: dict[str, SizeSpec] = {
    "small": SizeSpec(
        description="tests and smoke runs: ~300 tiny images, every task and file, generated in about a second",
        pretrain_images=48,
        pretrain_captions=3,
        retrieval_images=(24, 16, 16),
        captions_per_image=5,
        vqa_images=(24, 16),
        questions_per_image=4,
        vg_images=8,
        nlvr_sets=(12, 4, 4),
        ve_images=(8, 4, 4),
        grounding_images=(12, 6, 6),
        probe_sizes=(4, 8),
    ),
    "medium": SizeSpec(
        description="default for the synthetic presets: ~15k images, sized for minutes of CPU training",
        pretrain_images=2000,
        pretrain_captions=3,
        retrieval_images=(1000, 100, 100),
        captions_per_image=5,
        vqa_images=(1000, 250),
        questions_per_image=4,
        vg_images=250,
        nlvr_sets=(1200, 100, 100),
        ve_images=(300, 50, 50),
        grounding_images=(800, 100, 100),
        probe_sizes=(150, 300),
    ),
}
