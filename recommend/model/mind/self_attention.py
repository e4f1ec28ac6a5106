"""Self-attentive multi-interest extractor (ComiRec-SA, Cen et al., arXiv 2005.09347, section 3.2).

    A = softmax_over_positions(W2 tanh(W1 (H + P))^T)     [B, K, L]
    V = A H                                              [B, K, D]

H [B, L, D] are the history's item embeddings, P [maxlen, D] a learnt positional embedding (added
for computing the attention only: the interests are weighted sums of the items themselves),
W1: D -> hidden (ComiRec: 4D) with bias and tanh, W2: hidden -> K with bias, one attention head per
interest. Padded positions (id 0) get weight exactly 0, so a history and the same history with more
padding columns give the same interests, and a history without any real item gives K zero vectors
(no NaN: the softmax of an all-masked row is finite, and the mask then zeroes it).

Positions are the slots of the left-aligned, right-padded history (mind.reader.pad_histories and the
train sampler): slot 0 is the oldest of the last maxlen clicks, as in ComiRec's data iterator.

Where this differs from ComiRec's Model_ComiRec_SA, and why:
- ComiRec masks with a large negative logit (-2^32 + 1) and relies on exp underflowing; paddle's
  softmax clips logits at max - 64, so a masked position would keep ~1e-28 of weight. We multiply by
  the mask after the softmax, which makes the weight exactly 0 (and an empty history exactly 0).
- ComiRec multiplies the history embeddings by the mask before the attention; our item table keeps
  row 0 (padding) at zero (padding_idx=0), which is the same thing.
- ComiRec has no per-user interest count. With hyper_parameters.dynamic_k the heads beyond the
  user's K'_u are zeroed (the caller's interest mask, as for routing): which heads survive is a fixed
  choice (the first K'_u), not a learnt one.
PaddleRec has no self-attentive extractor.
"""

from __future__ import annotations

import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class SelfAttentiveExtractor(nn.Layer):
    """History embeddings [B, L, D] (+ the ids, for the mask) -> K interests [B, K, D]."""

    def __init__(self, dim: int, num_interests: int, maxlen: int, hidden: int) -> None:
        super().__init__()
        self.maxlen = maxlen
        # ComiRec's default initialiser for every one of these (TF glorot uniform, zero biases).
        self.pos_emb = self.create_parameter(
            [maxlen, dim], default_initializer=nn.initializer.XavierUniform()
        )
        self.w1 = nn.Linear(dim, hidden)
        self.w2 = nn.Linear(hidden, num_interests)

    def attention(self, hist: paddle.Tensor, hist_emb: paddle.Tensor) -> paddle.Tensor:
        """float [B, K, L]: each interest's weights over the history positions (0 on padding)."""
        # The length as a tensor, so a program exported by paddle.jit.to_static with a dynamic
        # history length slices P right (a static shape of -1 would slice off the last row).
        length = paddle.shape(hist_emb)[1:2]
        pos = paddle.slice(self.pos_emb, axes=[0], starts=[0], ends=length)
        x = hist_emb + pos.unsqueeze(0)
        logits = paddle.transpose(self.w2(paddle.tanh(self.w1(x))), [0, 2, 1])  # [B, K, L]
        mask = (hist != 0).astype(logits.dtype).unsqueeze(1)  # [B, 1, L]
        # The large negative keeps the real positions' softmax what it would be without padding
        # (the clipped masked terms, 1.6e-28 each, vanish beside the largest real term's 1.0 in
        # float32); the product with the mask makes the masked weights exactly 0.
        return F.softmax(logits - (1.0 - mask) * 1e9, axis=2) * mask

    def forward(self, hist: paddle.Tensor, hist_emb: paddle.Tensor) -> tuple[paddle.Tensor,
                                                                              paddle.Tensor]:
        """(interests [B, K, D] = A H, attention A [B, K, L])."""
        # Checked in dygraph only: under to_static the shape is a tensor (and P's slice fails).
        if paddle.in_dynamic_mode() and hist_emb.shape[1] > self.maxlen:
            raise ValueError(f"history length {hist_emb.shape[1]} > maxlen {self.maxlen}")
        a = self.attention(hist, hist_emb)
        return paddle.matmul(a, hist_emb), a
