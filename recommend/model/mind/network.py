"""MIND: Multi-Interest Network with Dynamic routing (Li et al., arXiv 1904.08030), trained as in
ComiRec (Cen et al., arXiv 2005.09347): next-item prediction, sampled softmax over log-uniform
negatives.

User tower: item embeddings of the history -> B2I dynamic routing -> K interest vectors [B, K, H]
(or, with hyper_parameters.extractor: self_attention, ComiRec's self-attentive extractor:
mind/self_attention.py; everything else is shared).
Training readout: label-aware attention over the K interests with the target item's embedding.
Serving/eval: the K interests are searched directly (no label involved).

Routing: the logits b are drawn per sample from N(0, init_std^2) and updated by the plain
agreement v_k . u_j; the coupling softmax runs over the K interests for each behaviour in every
iteration (MIND paper eq. (3)); padded behaviours get coupling 0, so they add nothing to any
interest. relu_layer and dynamic_k are off by default (relu_layer has weights only when on).
How this differs from PaddleRec's net.py, and why: README, "Where we differ from PaddleRec".
"""

from __future__ import annotations

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

# The hyper-parameters are defined with the config file's other sections; importable from here too.
from mind.config import CapsualConfig, HyperConfig, OptimizerConfig  # noqa: F401
from mind.sampled_softmax import LogUniformSampler, sampled_softmax_loss
from mind.self_attention import SelfAttentiveExtractor

# Seed of the routing logits used in eval mode (see MIND.__init__); fixed so every build of the
# model, and every checkpoint, routes a given history the same way.
EVAL_ROUTING_SEED = 20190417


def squash(z: paddle.Tensor) -> paddle.Tensor:
    """Capsule squash |z|^2 / (1 + |z|^2) * z / |z| over the last axis; exactly 0 at z = 0.

    The eps sits only under the square root, so squash(0) = 0 and its gradient are finite.
    """
    n2 = paddle.sum(z * z, axis=-1, keepdim=True)
    return z * (n2 / ((1.0 + n2) * paddle.sqrt(n2 + 1e-9)))


def signed_pow(x: paddle.Tensor, p: float) -> paddle.Tensor:
    """sign(x) |x|^p: the paper's pow(., p) extended to negative dot products.

    A plain power is undefined (NaN) for negative x and non-integer p, and flips the order for even
    integer p; sign-preserving keeps the order of the K scores, so as p grows the softmax tends to
    a hard max on the interest with the largest inner product with the label (when that product
    exceeds 1; scores inside (-1, 1) shrink towards 0 and the weights towards uniform, as with the
    paper's plain power).
    """
    if p == 1.0:
        return x
    return paddle.sign(x) * paddle.pow(paddle.abs(x), p)


def dynamic_interest_count(lengths: np.ndarray | paddle.Tensor, k: int):
    """K'_u = max(1, min(k, floor(log2 n))) per user, n = non-padding behaviours (0 -> 1).

    Floor, exactly in integers: floor(log2 n) >= j  <=>  n >= 2^j, so K'_u = 1 + #{j in 2..k : n >= 2^j}.
    (The paper writes log2 without a rounding; floor keeps K'_u <= log2 n.)
    """
    out = 1
    for j in range(2, k + 1):
        out = out + (lengths >= 2**j).astype("int64")
    return out


class MIND(nn.Layer):
    """Item embeddings + B2I routing (or self-attention) + label-aware attention + sampled softmax."""

    def __init__(self, hp: HyperConfig) -> None:
        super().__init__()
        self.hp = hp
        n, d, h = hp.item_count, hp.embedding_dim, hp.hidden_size
        k, lmax = hp.capsual.max_k, hp.maxlen
        # One table for history items, targets and negatives. padding_idx=0: row 0 stays 0 and
        # gets no gradient. sparse=True sends row-wise gradients, so lazy Adam updates only the
        # looked-up rows (the speed-up: bench/README.md, "Training: how the item table is updated").
        self.item_emb = nn.Embedding(
            n,
            d,
            padding_idx=0,
            sparse=hp.sparse_embedding,
            weight_attr=paddle.ParamAttr(
                initializer=nn.initializer.XavierUniform(fan_in=n, fan_out=d)
            ),
        )
        # Each extractor's parameters exist only when it is the one used, so a checkpoint holds
        # exactly one of them (and routing checkpoints from before the switch load unchanged).
        if hp.extractor == "self_attention":
            self.self_attention = SelfAttentiveExtractor(d, k, lmax, hp.attention_hidden)
        else:
            # Shared bilinear map S: low capsule u_j = e_j S (the same S for every interest, B2I).
            self.bilinear = self.create_parameter(
                [d, h], default_initializer=nn.initializer.XavierUniform()
            )
            # Eval-mode routing logits. All-zero logits would be symmetric over K (every interest
            # gets the same coupling, so the K vectors stay identical through all iterations); one
            # fixed draw from the training distribution breaks the symmetry deterministically. A
            # buffer, so checkpoints carry it.
            rng = np.random.default_rng(EVAL_ROUTING_SEED)
            b0 = rng.normal(0.0, hp.capsual.init_std, size=(1, k, lmax)).astype("float32")
            self.register_buffer("eval_routing_logits", paddle.to_tensor(b0), persistable=True)
        if hp.relu_layer:
            # Created only when on, so checkpoints of the model without it load unchanged.
            self.relu_linear = nn.Linear(h, h)
        self.sampler = LogUniformSampler(n)
        # (rank, world size) of data-parallel training, where a forward() sees this rank's
        # contiguous 1/world of the global batch; (0, 1) = one process.
        self.data_shard: tuple[int, int] = (0, 1)

    # ---------------------------------------------------------------- user tower
    def _routing_logits(self, batch: int, length: int) -> paddle.Tensor:
        """[B, K, length]: per-sample N(0, init_std^2) draws in training, the fixed draw in eval.

        Drawn at maxlen and sliced, so a history and the same history with extra padding columns
        see the same logits on their real positions.
        """
        if length > self.hp.maxlen:
            raise ValueError(f"history length {length} > maxlen {self.hp.maxlen}")
        k = self.hp.capsual.max_k
        if self.training:
            rank, world = self.data_shard
            b = paddle.randn([batch * world, k, self.hp.maxlen]) * self.hp.capsual.init_std
            if world > 1:
                # Data-parallel: every rank draws the logits of the whole global batch (same
                # seed) and keeps its rows, so N ranks route as one process on that batch.
                b = b[rank * batch : (rank + 1) * batch]
        else:
            b = self.eval_routing_logits.expand([batch, k, self.hp.maxlen])
        return b[:, :, :length]

    def interest_mask(self, hist: paddle.Tensor) -> paddle.Tensor | None:
        """float [B, K]: 1 for the user's first K'_u interests, 0 beyond; None without dynamic_k."""
        if not self.hp.dynamic_k:
            return None
        k = self.hp.capsual.max_k
        k_u = dynamic_interest_count((hist != 0).astype("int64").sum(axis=1), k)  # [B]
        return (paddle.arange(k, dtype="int64").unsqueeze(0) < k_u.unsqueeze(1)).astype("float32")

    def _route(
        self, hist: paddle.Tensor, hist_emb: paddle.Tensor
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor | None]:
        """B2I dynamic routing: hist int64 [B, L], hist_emb [B, L, D] ->
        (interests [B, K, H], last coupling coefficients [B, K, L], interest mask [B, K] or None).

        With dynamic_k the coupling softmax runs over the first K'_u interests only (the paper
        routes into K'_u capsules), so the others get no behaviour and stay exactly 0.
        """
        batch, length = hist.shape[0], hist.shape[1]
        u = paddle.matmul(hist_emb, self.bilinear)  # [B, L, H]
        mask = (hist != 0).astype(u.dtype).unsqueeze(1)  # [B, 1, L]
        b = self._routing_logits(batch, length)
        active = self.interest_mask(hist)
        if active is not None:
            # Paddle's softmax clips logits at max - 64 (exp = 1.6e-28, not 0): mask, then multiply.
            b = b - (1.0 - active.unsqueeze(2)) * 1e9
        iters = self.hp.capsual.iters
        for it in range(iters):
            last = it == iters - 1
            # Earlier iterations only set the coupling; as in the paper/ComiRec they see u without
            # gradient, so b is a constant and gradients reach S and the embeddings only through
            # the last iteration's weighted sum.
            u_it = u if last else u.detach()
            # Coupling: softmax over the K interests (axis 1) for each behaviour, then padded
            # behaviours are zeroed so they contribute to no interest at all.
            w = F.softmax(b, axis=1) * mask  # [B, K, L]
            if active is not None:
                w = w * active.unsqueeze(2)
            # w itself carries no gradient (b only ever sees u detached), so a penalty on the
            # coupling, such as REMI's routing regularisation, would train nothing here.
            v = squash(paddle.matmul(w, u_it))  # [B, K, H]
            if not last:
                b = b + paddle.matmul(v, u_it, transpose_y=True)  # agreement v_k . u_j
        if self.hp.relu_layer:
            v = F.relu(self.relu_linear(v))
        if active is not None:
            v = v * active.unsqueeze(2)  # relu(bias) of an empty capsule is not 0: zero it again
        return v, w, active

    def _attend(
        self, hist: paddle.Tensor, hist_emb: paddle.Tensor
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor | None]:
        """ComiRec's self-attention: (interests [B, K, H], attention [B, K, L], mask or None).

        dynamic_k keeps the first K'_u heads and zeroes the rest (ComiRec has no K'_u; see
        mind/self_attention.py); relu_layer applies as after routing.
        """
        v, a = self.self_attention(hist, hist_emb)
        active = self.interest_mask(hist)
        if self.hp.relu_layer:
            v = F.relu(self.relu_linear(v))
        if active is not None:
            a = a * active.unsqueeze(2)
            v = v * active.unsqueeze(2)
        return v, a, active

    def _extract(
        self, hist: paddle.Tensor, hist_emb: paddle.Tensor
    ) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor | None]:
        """The configured extractor (hp.extractor): routing (_route) or self-attention."""
        if self.hp.extractor == "self_attention":  # a config value, not a tensor: exportable
            return self._attend(hist, hist_emb)
        return self._route(hist, hist_emb)

    def interests(self, hist: paddle.Tensor) -> paddle.Tensor:
        """hist int64 [B, L] (0 = padding, L <= maxlen) -> K interest vectors [B, K, H].

        A history without real items gives K zero vectors (without relu_layer); with dynamic_k
        the interests beyond K'_u are zero vectors, and a zero vector means "no interest".
        """
        return self._extract(hist, self.item_emb(hist))[0]

    def coupling(self, hist: paddle.Tensor) -> paddle.Tensor:
        """[B, K, L]: how much each behaviour gives each interest (for inspection and tests):
        routing's last coupling coefficients, or self-attention's weights."""
        return self._extract(hist, self.item_emb(hist))[1]

    # ---------------------------------------------------------------- training
    def label_aware_attention(
        self, caps: paddle.Tensor, target_emb: paddle.Tensor, active: paddle.Tensor | None = None
    ) -> paddle.Tensor:
        """User vector = sum_k softmax_k(signed_pow(v_k . e_t, pow_p)) v_k; caps [B, K, H].

        With hp.hard_readout the weights are one-hot on argmax_k v_k . e_t (ComiRec): the
        gradient then reaches only the chosen interest (and the target through the choice's
        inner product, not through the choice itself). active [B, K] (dynamic_k): interests
        with 0 get weight exactly 0 in both readouts.
        """
        scores = signed_pow(paddle.sum(caps * target_emb.unsqueeze(1), axis=-1), self.hp.pow_p)
        if active is not None:
            scores = scores - (1.0 - active) * 1e9
        if self.hp.hard_readout:
            weights = F.one_hot(paddle.argmax(scores, axis=1), caps.shape[1]).astype(caps.dtype)
        else:
            weights = F.softmax(scores, axis=1)
        if active is not None:
            weights = weights * active  # exactly 0 (see _route on paddle's softmax clipping)
        return paddle.sum(caps * weights.unsqueeze(-1), axis=1)

    def _negatives(self) -> tuple[paddle.Tensor, paddle.Tensor]:
        """(negative ids [N], log of their expected count in the sample [N])."""
        if self.hp.neg_sampler == "full":
            ids = paddle.arange(1, self.hp.item_count, dtype="int64")
            # Every item exactly once: expected count 1, no correction; the target itself is
            # removed as an accidental hit, so the loss is the exact full softmax.
            return ids, paddle.zeros([self.hp.item_count - 1], dtype="float32")
        n_neg = self.hp.neg_samples
        neg = self.sampler.sample(n_neg)
        return neg, self.sampler.log_expected_count(neg, n_neg)

    def forward(self, hist: paddle.Tensor, target: paddle.Tensor) -> paddle.Tensor:
        """hist int64 [B, L], target int64 [B] -> scalar sampled-softmax loss."""
        neg, log_q = self._negatives()
        batch, length = hist.shape[0], hist.shape[1]
        # One lookup for history, targets and negatives: one sparse gradient for the table.
        ids = paddle.concat([hist.reshape([-1]), target.reshape([-1]), neg])
        emb = self.item_emb(ids)
        hist_emb = emb[: batch * length].reshape([batch, length, -1])
        target_emb = emb[batch * length : batch * length + batch]
        neg_emb = emb[batch * length + batch :]
        caps, _, active = self._extract(hist, hist_emb)
        user = self.label_aware_attention(caps, target_emb, active)
        return sampled_softmax_loss(user, target_emb, target.reshape([-1]), neg, neg_emb, log_q,
                                    hard_neg_beta=self.hp.hard_neg_beta)

    def item_embeddings(self) -> np.ndarray:
        """float32 [item_count, D]; row 0 (padding) is all zeros."""
        w = self.item_emb.weight.numpy().astype(np.float32, copy=True)
        w[0] = 0.0
        return w
