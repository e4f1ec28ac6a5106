"""Log-uniform sampler and sampled softmax: support, frequencies, accidental hits, consistency."""

from __future__ import annotations

import numpy as np
import paddle

from mind.sampled_softmax import LogUniformSampler, sampled_softmax_loss


def test_sampler_support_and_log_uniform_frequencies() -> None:
    paddle.seed(0)
    s = LogUniformSampler(50)
    ids = s.sample(200_000).numpy()
    assert ids.min() >= 1 and ids.max() <= 49
    q = s.probs()
    assert q[0] == 0 and abs(q.sum() - 1) < 1e-12
    freq = np.bincount(ids, minlength=50) / len(ids)
    # ~4 sigma binomial bound per id
    np.testing.assert_array_less(np.abs(freq - q), 4 * np.sqrt(q * (1 - q) / len(ids)) + 1e-12)
    assert freq[1] > freq[10] > freq[49]  # popular (small) ids drawn more


def test_log_expected_count() -> None:
    s = LogUniformSampler(1000)
    ids = np.array([1, 7, 999])
    got = s.log_expected_count(paddle.to_tensor(ids), 64).numpy()
    np.testing.assert_allclose(got, np.log(64 * s.probs()[ids]), rtol=1e-6)


def _loss(user, items, target, neg, log_q):
    return float(sampled_softmax_loss(
        paddle.to_tensor(user), paddle.to_tensor(items[target]), paddle.to_tensor(target),
        paddle.to_tensor(neg), paddle.to_tensor(items[neg]), paddle.to_tensor(log_q),
    ))


def test_accidental_hits_are_removed() -> None:
    rng = np.random.default_rng(0)
    items = rng.normal(size=(10, 4)).astype(np.float32)
    user = rng.normal(size=(2, 4)).astype(np.float32)
    target = np.array([3, 5])
    neg = np.array([3, 1, 2])  # 3 is row 0's target
    log_q = np.array([0.1, -0.2, 0.3], np.float32)
    got = _loss(user, items, target, neg, log_q)

    def row(u, t, keep):
        logits = np.r_[u @ items[t], (items[neg[keep]] @ u) - log_q[keep]]
        return np.log(np.exp(logits).sum()) - logits[0]

    want = (row(user[0], 3, [1, 2]) + row(user[1], 5, [0, 1, 2])) / 2
    assert abs(got - want) < 1e-5


def test_matches_full_softmax_in_expectation() -> None:
    """Averaged over many negative draws, sampled softmax ~= full softmax cross-entropy."""
    paddle.seed(1)
    rng = np.random.default_rng(1)
    n_items, n_neg, draws = 50, 400, 300
    items = rng.normal(scale=0.7, size=(n_items, 8)).astype(np.float32)
    items[0] = 0
    user = rng.normal(scale=0.7, size=(16, 8)).astype(np.float32)
    target = rng.integers(1, n_items, size=16)
    logits = user @ items[1:].T  # real items only
    full = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(16), target - 1])

    s = LogUniformSampler(n_items)
    vals = []
    for _ in range(draws):
        neg = s.sample(n_neg)
        log_q = s.log_expected_count(neg, n_neg).numpy()
        vals.append(_loss(user, items, target, neg.numpy(), log_q))
    mean = float(np.mean(vals))
    assert abs(mean - full) < 0.02 * full, (mean, full)
    # And it is not trivially equal to a loss that ignores the negatives' correction.
    no_corr = np.mean([_loss(user, items, target, s.sample(n_neg).numpy(),
                             np.zeros(n_neg, np.float32)) for _ in range(5)])
    assert abs(no_corr - full) > 0.1 * full


def test_hard_negative_weights_by_hand() -> None:
    """REMI re-weighting: negative j's term gets exp(beta s_j) / Z, Z self-normalised with 1/q."""
    rng = np.random.default_rng(3)
    items = rng.normal(size=(8, 3)).astype(np.float32)
    user = rng.normal(size=(2, 3)).astype(np.float32)
    target = np.array([2, 6])
    neg = np.array([1, 2, 4, 5])  # 2 is row 0's target: an accidental hit, left out everywhere
    log_q = np.array([0.3, -0.1, 0.2, -0.4], np.float32)
    beta = 0.7
    got = float(sampled_softmax_loss(
        paddle.to_tensor(user), paddle.to_tensor(items[target]), paddle.to_tensor(target),
        paddle.to_tensor(neg), paddle.to_tensor(items[neg]), paddle.to_tensor(log_q),
        hard_neg_beta=beta,
    ))

    def row(u, t, keep):
        s = items[neg[keep]].astype(np.float64) @ u
        inv_q = np.exp(-log_q[keep].astype(np.float64))
        z = (np.exp(beta * s) * inv_q).sum() / inv_q.sum()
        w = np.exp(beta * s) / z
        pos = u @ items[t]
        return np.log(np.exp(pos) + (w * np.exp(s) * inv_q).sum()) - pos

    want = (row(user[0], 2, [0, 2, 3]) + row(user[1], 6, [0, 1, 2, 3])) / 2
    assert abs(got - want) < 1e-5
    # The re-weighting changes the loss, and the same reference with beta = 0 is the plain loss.
    assert abs(_loss(user, items, target, neg, log_q) - got) > 1e-3
    beta = 0.0
    plain = (row(user[0], 2, [0, 2, 3]) + row(user[1], 6, [0, 1, 2, 3])) / 2
    assert abs(_loss(user, items, target, neg, log_q) - plain) < 1e-5


def test_hard_negative_weights_average_to_one_over_uniform_full_sample() -> None:
    """With every item once (log_q = 0), the weights are exp(beta s) / mean exp(beta s):
    equal scores give weight 1 each, so the loss equals the plain one."""
    items = np.tile(np.array([[0.5, -0.2]], np.float32), (6, 1))
    items[0] = 0
    user = np.array([[1.0, 2.0]], np.float32)
    target = np.array([3])
    neg = np.arange(1, 6)
    log_q = np.zeros(5, np.float32)
    args = [paddle.to_tensor(x) for x in (user, items[target], target, neg, items[neg], log_q)]
    assert abs(float(sampled_softmax_loss(*args, hard_neg_beta=2.0))
               - float(sampled_softmax_loss(*args))) < 1e-6
