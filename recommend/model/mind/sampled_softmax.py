"""Sampled softmax with a log-uniform (Zipf) negative sampler.

Item ids are ordered by descending training frequency (id 1 = most popular, id 0 = padding), so a
log-uniform distribution over ids approximates item popularity, as in ComiRec (arXiv 2005.09347),
which uses TensorFlow's log-uniform candidate sampler.

    q(i) = log((i + 1) / i) / log(item_count)        for i in [1, item_count)

sums to 1 over the real items and never yields the padding id 0.
"""

from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn.functional as F


class LogUniformSampler:
    """Draws negatives i.i.d. (with replacement) from q over ids [1, item_count).

    Randomness comes from paddle's global generator, which the trainer seeds once (`init_seed`) and
    saves in every checkpoint, so a resumed run draws the same negatives as an uninterrupted one.
    """

    def __init__(self, item_count: int) -> None:
        if item_count < 2:
            raise ValueError(f"item_count must be >= 2 (id 0 is padding), got {item_count}")
        self.item_count = item_count
        self._log_range = math.log(item_count)

    def probs(self) -> np.ndarray:
        """q as float64 [item_count]; q[0] = 0."""
        ids = np.arange(1, self.item_count, dtype=np.float64)
        return np.concatenate([[0.0], np.log1p(1.0 / ids) / self._log_range])

    def sample(self, n: int) -> paddle.Tensor:
        """n ids, int64 [n], by inverse CDF: floor(item_count ** u) for u ~ U[0, 1)."""
        u = paddle.rand([n], dtype="float64")
        ids = paddle.floor(paddle.exp(u * self._log_range)).astype("int64")
        # exp() rounding can reach item_count for u just below 1; keep the range closed.
        return paddle.clip(ids, 1, self.item_count - 1)

    def log_expected_count(self, ids: paddle.Tensor, n: int) -> paddle.Tensor:
        """log(n * q(ids)), float32, for ids >= 1: the log-Q correction of n draws."""
        x = ids.astype("float64")
        q = paddle.log1p(1.0 / x) / self._log_range
        return paddle.log(q * n).astype("float32")


def sampled_softmax_loss(
    user: paddle.Tensor,
    pos_emb: paddle.Tensor,
    target: paddle.Tensor,
    neg_ids: paddle.Tensor,
    neg_emb: paddle.Tensor,
    neg_log_q: paddle.Tensor,
    hard_neg_beta: float = 0.0,
) -> paddle.Tensor:
    """Mean sampled-softmax cross-entropy of the targets against negatives shared by the batch.

    user [B, D], pos_emb [B, D], target int64 [B], neg_ids int64 [N], neg_emb [N, D],
    neg_log_q [N] = log of each negative's expected count in the N draws.

    - log-Q correction: a negative's logit is lowered by log(N q(i)), so the sum over the sample,
      sum_s exp(l_s) / (N q(s)), is an unbiased estimate of the full partition sum over items.
    - The target's own logit is NOT corrected. TensorFlow's sampled_softmax_loss (used by ComiRec)
      and PaddleRec subtract log Q from the true logit as well; then, as N grows, the loss tends to
      -l_t + log(sum_{j != t} exp l_j) rather than the full softmax loss. Leaving the target as is
      makes the loss converge to the full softmax cross-entropy (Blanc & Rendle, ICML 2018), which
      tests/test_sampled_softmax.py checks.
    - Accidental hits: a negative equal to the row's own target is masked out (its logit -> -inf),
      so the estimate covers exactly the items j != t.
    - hard_neg_beta = beta > 0: REMI's interest-aware hard-negative mining (Xie et al., RecSys
      2023). Their ideal negative distribution is q_beta(j) ~ exp(beta s_j) over the items, with
      s_j = user . e_j (the user vector being the interest chosen by the label); it is
      approximated by re-weighting the sampled negatives. Here each negative's partition term
      exp(l_j) gets the weight w_j = exp(beta s_j) / Z, Z = the self-normalised estimate of
      the mean of exp(beta s) over the items from the same sample
      (Z = sum_s exp(beta s_s) / (N q_s) / sum_s 1 / (N q_s)), so the weights average to 1 over
      the catalogue and beta = 0 gives back the plain loss. The weights carry no gradient
      (they choose which negatives matter; they are not a term to optimise).
    """
    pos_logit = paddle.sum(user * pos_emb, axis=-1, keepdim=True)  # [B, 1]
    raw = paddle.matmul(user, neg_emb, transpose_y=True)  # [B, N]
    neg_logit = raw - neg_log_q.unsqueeze(0)
    hit = paddle.equal(target.unsqueeze(1), neg_ids.unsqueeze(0))
    if hard_neg_beta != 0.0:
        s = raw.detach() * hard_neg_beta
        inv_q = paddle.masked_fill(-neg_log_q.unsqueeze(0).expand_as(s), hit, -1e30)
        log_z = paddle.logsumexp(s + inv_q, axis=1, keepdim=True) - paddle.logsumexp(
            inv_q, axis=1, keepdim=True)
        neg_logit = neg_logit + (s - log_z)
    neg_logit = paddle.masked_fill(neg_logit, hit, -1e30)
    logits = paddle.concat([pos_logit, neg_logit], axis=1)
    # The target sits in column 0. cross_entropy is the fused log-softmax (4x faster than
    # logsumexp here on CPU).
    label = paddle.zeros([logits.shape[0], 1], dtype="int64")
    return F.cross_entropy(logits, label, reduction="mean")
