"""A compact BERT for ALBEF's text, fusion and answer-decoder stacks.

Post-LayerNorm layers with exact GELU and attention through ``scaled_dot_product_attention``. Layers with
index ``>= fusion_layer`` add cross-attention to image (or question) states between self-attention and the
feed-forward block, as the official ``xbert.py``. Module names follow the Hugging Face / official layout
(``embeddings.word_embeddings``, ``encoder.layer.{i}.attention.self.query``, ``crossattention``,
``intermediate.dense``, ``output.LayerNorm``), so ``bert-base-uncased`` and official ALBEF weights map onto
them by prefix only (see ``albef.checkpoint.convert``).

Separate methods replace the official ``mode=`` switch: :meth:`BertStack.forward_text` (layers
``[0, fusion_layer)``), :meth:`BertStack.forward_fusion` (layers ``[fusion_layer, num_layers)`` on given
hidden states) and :meth:`BertStack.forward_multimodal` (every layer, from token ids).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from albef.config.schema import TextConfig

MASK_VALUE = -10000.0
"""Additive score for masked keys (the official extended-attention-mask value)."""

ImageStates = Tensor | Sequence[Tensor]
"""Cross-attention context: one tensor (B, S, D) or, for NLVR², one per image, used by layers in turn."""


INIT_STD = 0.02
"""BERT's ``initializer_range``: std of the normal init of linear and embedding weights."""


def init_bert_weights(module: nn.Module, std: float = INIT_STD) -> None:
    """BERT initialisation: normal(0, std) weights, zero biases, LayerNorm (1, 0). Use with ``apply``."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Embedding) and module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def prefer_math_attention(q: Tensor) -> bool:
    """Whether plain-math attention beats the fused SDPA kernel: on CPU in bf16/fp16 (measured 7-30% faster
    without AMX; see benchmarks/README.md). Everywhere else SDPA is used."""
    return q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16)


def padding_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive mask (B, 1, 1, L) from a 0/1 mask (B, L): 0 where attended, -10000 where padded."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_VALUE


def causal_padding_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive mask (B, 1, L, L) combining a causal (lower-triangular) mask with padding."""
    length = attention_mask.shape[1]
    causal = torch.ones(length, length, device=attention_mask.device, dtype=dtype).tril()
    allowed = causal[None, None] * attention_mask[:, None, None, :].to(dtype)
    return (1.0 - allowed) * MASK_VALUE


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout. Positions are ``0..L-1``, types 0."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, input_ids: Tensor) -> Tensor:
        """Embed token ids (B, L) into (B, L, H)."""
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate query/key/value projections (module name ``self``).

    Args:
        hidden_size: Query width and output width.
        num_heads: Number of heads; ``hidden_size`` must divide evenly.
        kv_width: Input width of key and value (``encoder_width`` for cross-attention).
        dropout: Attention-probability dropout, active in training.
    """

    def __init__(self, hidden_size: int, num_heads: int, kv_width: int, dropout: float) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(kv_width, hidden_size)
        self.value = nn.Linear(kv_width, hidden_size)
        self.dropout = dropout
        self.fused = True
        """Use ``F.scaled_dot_product_attention``; ``False`` selects the plain-math path (tests)."""

    def split_heads(self, x: Tensor) -> Tensor:
        """(B, L, H) -> (B, h, L, H/h)."""
        batch, length, width = x.shape
        return x.view(batch, length, self.num_heads, width // self.num_heads).transpose(1, 2)

    @staticmethod
    def merge_heads(x: Tensor) -> Tensor:
        """(B, h, L, d) -> (B, L, h*d)."""
        batch, heads, length, head_dim = x.shape
        return x.transpose(1, 2).reshape(batch, length, heads * head_dim)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """The attention kernel on head-split tensors (B, h, Lq, d), (B, h, S, d) -> (B, h, Lq, d): fused SDPA,
        or plain math (:func:`prefer_math_attention`, or ``fused`` off); probability dropout in training."""
        if mask is not None:
            mask = mask.to(q.dtype)
        p = self.dropout if self.training else 0.0
        if self.fused and not prefer_math_attention(q):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        scores = q @ k.transpose(-1, -2) / (q.shape[-1] ** 0.5)
        if mask is not None:
            scores = scores + mask
        return F.dropout(scores.softmax(dim=-1), p=p) @ v

    def stacked(self, *names: str) -> tuple[Tensor, Tensor]:
        """Weight and bias of the named projections (``query``, ``key``, ``value``) applied as one product:
        ``F.linear(x, *stacked("key", "value"))`` is ``cat([key(x), value(x)], -1)``, each output summing
        over the same inputs in the same order (a batched scorer's one matrix product instead of several)."""
        linears = [getattr(self, name) for name in names]
        return torch.cat([m.weight.detach() for m in linears]), torch.cat([m.bias.detach() for m in linears])

    def forward(self, hidden: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        """Attend from ``hidden`` (B, L, H) to ``context`` (B, S, Dk); ``mask`` is additive (B, 1, L|1, S)."""
        q = self.split_heads(self.query(hidden))
        k, v = self.split_heads(self.key(context)), self.split_heads(self.value(context))
        return self.merge_heads(self.attend(q, k, v, mask))


class ResidualNorm(nn.Module):
    """``LayerNorm(residual + dropout(dense(x)))``: BERT's post-norm sub-layer output."""

    def __init__(self, in_width: int, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_width, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        """(B, L, in_width), (B, L, H) -> (B, L, H)."""
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class AttentionBlock(nn.Module):
    """Attention followed by its residual + LayerNorm (``attention`` or ``crossattention``)."""

    def __init__(self, cfg: TextConfig, kv_width: int) -> None:
        super().__init__()
        self.self = MultiHeadAttention(cfg.hidden_size, cfg.num_heads, kv_width, cfg.attention_dropout)
        self.output = ResidualNorm(cfg.hidden_size, cfg)

    def forward(self, hidden: Tensor, context: Tensor, mask: Tensor | None) -> Tensor:
        """(B, L, H) attending to (B, S, Dk) -> (B, L, H)."""
        return self.output(self.self(hidden, context, mask), hidden)


class Intermediate(nn.Module):
    """The feed-forward expansion with exact (erf) GELU."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, H) -> (B, L, I)."""
        return F.gelu(self.dense(x))


class BertLayer(nn.Module):
    """Self-attention, optional cross-attention, feed-forward; each with residual + post-LayerNorm."""

    def __init__(self, cfg: TextConfig, cross_attention: bool) -> None:
        super().__init__()
        self.attention = AttentionBlock(cfg, cfg.hidden_size)
        self.crossattention = AttentionBlock(cfg, cfg.encoder_width) if cross_attention else None
        self.intermediate = Intermediate(cfg)
        self.output = ResidualNorm(cfg.intermediate_size, cfg)

    def forward(
        self,
        hidden: Tensor,
        mask: Tensor | None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        """(B, L, H) -> (B, L, H); ``context`` (B, S, encoder_width) is required iff the layer cross-attends."""
        hidden = self.attention(hidden, hidden, mask)
        if self.crossattention is not None:
            if context is None:
                raise ValueError("a fusion layer needs image states to cross-attend to")
            hidden = self.crossattention(hidden, context, context_mask)
        return self.output(self.intermediate(hidden), hidden)


class LayerStack(nn.Module):
    """Holds the layers as ``layer.{i}`` (the official ``encoder`` module)."""

    def __init__(self, layers: list[BertLayer]) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)


class BertStack(nn.Module):
    """Embeddings plus ``num_layers`` BERT layers; layers ``>= fusion_layer`` cross-attend.

    Args:
        cfg: Text config (sizes, ``fusion_layer``, ``encoder_width``).
        num_layers: Overrides ``cfg.num_layers`` (NLVR² uses 18, the VQA decoder 6).
        fusion_layer: Overrides ``cfg.fusion_layer`` (the VQA decoder uses 0).
        causal: Causal self-attention (the VQA answer decoder).
    """

    def __init__(
        self,
        cfg: TextConfig,
        num_layers: int | None = None,
        fusion_layer: int | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        self.num_layers = cfg.num_layers if num_layers is None else num_layers
        self.fusion_layer = cfg.fusion_layer if fusion_layer is None else fusion_layer
        self.causal = causal
        self.embeddings = BertEmbeddings(cfg)
        self.encoder = LayerStack(
            [BertLayer(cfg, cross_attention=i >= self.fusion_layer) for i in range(self.num_layers)]
        )
        self.apply(lambda module: init_bert_weights(module, cfg.initializer_range))

    def self_mask(self, attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
        """The additive self-attention mask for this stack (causal for a decoder)."""
        return (
            causal_padding_mask(attention_mask, dtype) if self.causal else padding_mask(attention_mask, dtype)
        )

    def run_layers(
        self,
        hidden: Tensor,
        attention_mask: Tensor,
        start: int,
        end: int,
        image_states: ImageStates | None = None,
        image_masks: Tensor | Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Run layers ``[start, end)`` on hidden states (B, L, H).

        Args:
            hidden: Input states (B, L, H).
            attention_mask: 0/1 padding mask (B, L) of the text.
            start: First layer index.
            end: One past the last layer index.
            image_states: Context for cross-attention (B, S, D), or a list used in turn by the fusion layers:
                layer ``i`` takes element ``(i - fusion_layer) % len(list)``.
            image_masks: 0/1 masks (B, S) of the context (a list matching ``image_states``); ``None`` means
                every context token is attended.

        Returns:
            Hidden states (B, L, H) after layer ``end - 1``.
        """
        mask = self.self_mask(attention_mask, hidden.dtype)
        contexts = (
            [image_states] if isinstance(image_states, Tensor) or image_states is None else image_states
        )
        ctx_masks = image_masks if isinstance(image_masks, Sequence) else [image_masks] * len(contexts)
        extended = [None if m is None else padding_mask(m, hidden.dtype) for m in ctx_masks]
        for i in range(start, end):
            j = (i - self.fusion_layer) % len(contexts)
            hidden = self.encoder.layer[i](hidden, mask, contexts[j], extended[j])
        return hidden

    def forward_text(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Text-only pass: embeddings and layers ``[0, fusion_layer)``. (B, L) -> (B, L, H)."""
        return self.run_layers(self.embeddings(input_ids), attention_mask, 0, self.fusion_layer)

    def forward_fusion(
        self,
        text_states: Tensor,
        attention_mask: Tensor,
        image_states: ImageStates,
        image_masks: Tensor | Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Fusion pass on text states (B, L, H): layers ``[fusion_layer, num_layers)`` -> (B, L, H)."""
        return self.run_layers(
            text_states, attention_mask, self.fusion_layer, self.num_layers, image_states, image_masks
        )

    def forward_multimodal(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        image_states: ImageStates,
        image_masks: Tensor | Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Every layer from token ids (B, L), cross-attending in the fusion layers -> (B, L, H)."""
        hidden = self.embeddings(input_ids)
        return self.run_layers(hidden, attention_mask, 0, self.num_layers, image_states, image_masks)


class MLMHead(nn.Module):
    """BERT's LM prediction head (``cls.predictions``): dense, GELU, LayerNorm, decoder tied to embeddings."""

    def __init__(self, cfg: TextConfig, word_embeddings: nn.Embedding) -> None:
        super().__init__()
        self.transform = ResidualFreeTransform(cfg)
        self.decoder = nn.Linear(cfg.hidden_size, cfg.vocab_size)
        self.transform.apply(lambda module: init_bert_weights(module, cfg.initializer_range))
        self.decoder.weight = word_embeddings.weight
        nn.init.zeros_(self.decoder.bias)
        # One tensor under both names, as in BERT (``predictions.bias`` is ``predictions.decoder.bias``).
        self.bias = self.decoder.bias

    def forward(self, hidden: Tensor) -> Tensor:
        """(B, L, H) -> logits (B, L, V)."""
        return self.decoder(self.transform(hidden))


class ResidualFreeTransform(nn.Module):
    """The head transform: ``LayerNorm(gelu(dense(x)))`` (no residual)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        """(B, L, H) -> (B, L, H)."""
        return self.LayerNorm(F.gelu(self.dense(x)))
