"""MIND network: routing checked by hand, masking, eval determinism, label-aware attention."""

from __future__ import annotations

import numpy as np
import paddle
import pytest

from mind.network import MIND, CapsualConfig, HyperConfig


def tiny_model(k: int = 2, maxlen: int = 3, d: int = 2, iters: int = 2, items: int = 5) -> MIND:
    hp = HyperConfig(
        item_count=items, embedding_dim=d, hidden_size=d, maxlen=maxlen, neg_samples=16,
        capsual=CapsualConfig(iters=iters, max_k=k, init_std=1.0),
    )
    return MIND(hp)


def np_squash(z: np.ndarray) -> np.ndarray:
    n2 = (z * z).sum(-1, keepdims=True)
    n = np.sqrt(n2)
    return np.where(n > 0, n2 / (1 + n2) * z / np.where(n > 0, n, 1), 0.0)


def test_routing_matches_hand_computation() -> None:
    """K=2, L=3, D=2, two iterations, fixed S, b and embeddings; position 3 is padding."""
    m = tiny_model()
    emb = np.array([[0, 0], [1.0, 0.5], [-0.5, 1.0], [0.3, -0.8], [2.0, 2.0]], np.float32)
    S = np.array([[1.0, 0.2], [-0.3, 0.8]], np.float32)
    b0 = np.array([[[0.5, -1.0, 0.3], [-0.2, 0.7, 1.5]]], np.float32)
    m.item_emb.weight.set_value(emb)
    m.bilinear.set_value(S)
    m.eval_routing_logits.set_value(b0)
    m.eval()
    hist = np.array([[1, 2, 0]])
    got = m.interests(paddle.to_tensor(hist)).numpy()[0]

    u = emb[hist[0]] @ S  # [L, D]
    mask = (hist[0] != 0).astype(np.float32)  # [L]
    b = b0[0].astype(np.float64)
    for it in range(2):
        w = np.exp(b) / np.exp(b).sum(axis=0, keepdims=True) * mask  # softmax over K
        v = np_squash(w @ u)
        if it == 0:
            b = b + v @ u.T
    np.testing.assert_allclose(got, v, rtol=1e-5, atol=1e-6)
    # Nothing flowed from the padded position: the reference is independent of emb[0].
    assert np.abs(got).sum() > 0


def test_coupling_sums_to_one_over_interests_and_zero_on_padding() -> None:
    paddle.seed(3)
    m = tiny_model(k=4, maxlen=6, d=4, iters=3, items=20)
    m.train()
    hist = paddle.to_tensor(np.array([[3, 5, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6]]))
    w = m.coupling(hist).numpy()  # [B, K, L]
    np.testing.assert_allclose(w.sum(axis=1), (hist.numpy() != 0).astype(np.float32), atol=1e-6)


@pytest.mark.parametrize("training", [True, False])
def test_padding_changes_nothing(training: bool) -> None:
    m = tiny_model(k=4, maxlen=8, d=4, iters=3, items=30)
    m.train(training)
    short = np.array([[4, 9, 17], [2, 0, 0]])
    longer = np.concatenate([short, np.zeros((2, 5), np.int64)], axis=1)
    paddle.seed(11)
    a = m.interests(paddle.to_tensor(short)).numpy()
    paddle.seed(11)
    b = m.interests(paddle.to_tensor(longer)).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_empty_history_gives_zeros_and_finite_gradients() -> None:
    paddle.seed(0)
    m = tiny_model(k=3, maxlen=5, d=4, iters=3, items=30)
    hist = paddle.to_tensor(np.zeros((2, 5), np.int64))
    m.eval()
    v = m.interests(hist).numpy()
    assert np.all(v == 0) and not np.isnan(v).any()
    m.train()
    loss = m(hist, paddle.to_tensor(np.array([3, 4])))
    loss.backward()
    assert np.isfinite(float(loss))
    for p in m.parameters():
        if p.grad is not None:
            assert np.isfinite(np.asarray(p.grad.numpy() if hasattr(p.grad, "numpy") else p.grad)).all()


def test_eval_is_deterministic_training_is_per_sample_random() -> None:
    m = tiny_model(k=4, maxlen=5, d=4, iters=3, items=30)
    hist = paddle.to_tensor(np.array([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]))
    m.eval()
    a, b = m.interests(hist).numpy(), m.interests(hist).numpy()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[0], a[1])
    m.train()
    t = m.interests(hist).numpy()
    # Per-sample routing logits: two users with the same history route differently in training.
    assert not np.allclose(t[0], t[1])
    # Eval logits break the symmetry between interests (all-zero logits would not).
    assert not np.allclose(a[0, 0], a[0, 1])


def test_label_aware_attention_picks_closest_interest_as_pow_grows() -> None:
    caps = paddle.to_tensor(np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, -0.2]]], np.float32))
    # Scores 1.8, 2.4, -2.28: a power sharpens the softmax only for scores beyond 1 (as in the
    # paper, whose p -> inf limit is hard attention on the largest score).
    target = paddle.to_tensor(np.array([[1.8, 2.4]], np.float32))  # closest: interest 1
    out = {}
    for p in (1.0, 2.5, 40.0):
        m = MIND(HyperConfig(item_count=5, embedding_dim=2, hidden_size=2, pow_p=p))
        out[p] = m.label_aware_attention(caps, target).numpy()[0]
        assert np.isfinite(out[p]).all()  # negative scores with a non-integer power: no NaN
    dist = {p: np.linalg.norm(v - [0.0, 1.0]) for p, v in out.items()}
    assert dist[40.0] < 1e-3 < dist[2.5] < dist[1.0]


def test_item_embeddings_shape_and_padding_row() -> None:
    m = tiny_model(items=7)
    e = m.item_embeddings()
    assert e.shape == (7, 2) and e.dtype == np.float32 and np.all(e[0] == 0)


def test_training_reduces_loss_on_a_fixed_batch() -> None:
    paddle.seed(5)
    m = tiny_model(k=2, maxlen=4, d=8, iters=3, items=40)
    opt = paddle.optimizer.Adam(0.05, parameters=m.parameters(), lazy_mode=True)
    hist = paddle.to_tensor(np.array([[1, 2, 3, 0], [10, 11, 12, 13]]))
    target = paddle.to_tensor(np.array([4, 14]))
    losses = []
    for _ in range(30):
        loss = m(hist, target)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


def test_hard_readout_is_the_closest_interest_exactly() -> None:
    caps = paddle.to_tensor(np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, -0.2]],
                                      [[1.0, 0.0], [0.0, 1.0], [-1.0, -0.2]]], np.float32))
    # Scores row 0: 0.3, 0.4, -0.38 (all inside (-1, 1): pow_p could not sharpen them);
    # row 1: -0.5, -0.1, 0.52.
    target = paddle.to_tensor(np.array([[0.3, 0.4], [-0.5, -0.1]], np.float32))
    m = MIND(HyperConfig(item_count=5, embedding_dim=2, hidden_size=2, hard_readout=True))
    np.testing.assert_allclose(m.label_aware_attention(caps, target).numpy(),
                               [[0.0, 1.0], [-1.0, -0.2]])


def test_full_negatives_give_the_exact_full_softmax() -> None:
    paddle.seed(2)
    m = tiny_model(k=2, maxlen=3, d=4, iters=2, items=9)
    m = MIND(m.hp.model_copy(update={"neg_sampler": "full"}))
    m.eval()  # fixed routing logits, so the user vector below is the one the loss saw
    hist = paddle.to_tensor(np.array([[1, 2, 0], [5, 6, 7]]))
    target = np.array([4, 6])
    loss = float(m(hist, paddle.to_tensor(target)))
    caps = m.interests(hist)
    table = m.item_emb.weight.numpy().astype(np.float64)
    user = m.label_aware_attention(caps, paddle.to_tensor(table[target].astype(np.float32))).numpy()
    logits = user.astype(np.float64) @ table[1:].T  # items 1..8: the padding row is never a class
    want = np.mean([np.log(np.exp(row).sum()) - row[t - 1] for row, t in zip(logits, target)])
    assert abs(loss - want) < 1e-5


# ------------------------------------------------------------------ relu_layer and dynamic_k
def test_relu_layer_equals_hand_computation_and_is_non_negative() -> None:
    """relu(v W + c) on the routed interests: shape [B, K, H], >= 0, equal to numpy."""
    base = tiny_model(k=2, maxlen=3, d=2, iters=2)
    m = MIND(base.hp.model_copy(update={"relu_layer": True}))
    m.set_state_dict(base.state_dict())  # same embeddings, S and eval logits as `base`
    W = np.array([[1.0, -2.0], [0.5, 1.0]], np.float32)
    c = np.array([0.1, -0.3], np.float32)
    m.relu_linear.weight.set_value(W)  # paddle's Linear: y = x W + c, W [in, out]
    m.relu_linear.bias.set_value(c)
    m.eval()
    base.eval()
    hist = paddle.to_tensor(np.array([[1, 2, 0], [3, 0, 0]]))
    v = base.interests(hist).numpy()  # routing alone
    got = m.interests(hist).numpy()
    assert got.shape == (2, 2, 2) and (got >= 0).all()
    np.testing.assert_allclose(got, np.maximum(v @ W + c, 0.0), rtol=1e-5, atol=1e-6)
    assert (got == 0).any() and (got > 0).any()  # this W, c really clips something


def test_relu_layer_off_keeps_the_old_parameters() -> None:
    """Backward compatible: without relu_layer there is no new parameter in the state dict."""
    keys = set(tiny_model().state_dict())
    assert not any("relu" in k for k in keys)


@pytest.mark.parametrize("n, want", [(0, 1), (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (7, 2),
                                     (8, 3), (15, 3), (16, 4), (17, 4), (20, 4)])
def test_dynamic_k_by_hand_floor_of_log2(n: int, want: int) -> None:
    from mind.network import dynamic_interest_count

    assert int(dynamic_interest_count(np.array(n), 4)) == want
    assert int(dynamic_interest_count(np.array(n), 2)) == min(want, 2)
    # The network counts the non-padding behaviours of its input.
    m = MIND(tiny_model(k=4, maxlen=20, items=30).hp.model_copy(update={"dynamic_k": True}))
    hist = np.zeros((1, 20), np.int64)
    hist[0, 20 - n:] = np.arange(1, n + 1)
    mask = m.interest_mask(paddle.to_tensor(hist)).numpy()[0]
    np.testing.assert_array_equal(mask, [1.0] * want + [0.0] * (4 - want))


@pytest.mark.parametrize("relu", [False, True])
def test_masked_interests_are_zero_and_get_no_behaviour(relu: bool) -> None:
    paddle.seed(4)
    hp = tiny_model(k=4, maxlen=8, d=4, items=30).hp.model_copy(
        update={"dynamic_k": True, "relu_layer": relu})
    m = MIND(hp)
    hist = paddle.to_tensor(np.array([[1, 2, 3, 4, 5, 0, 0, 0], [7, 8, 0, 0, 0, 0, 0, 0]]))
    for training in (True, False):
        m.train(training)
        _, w, active = m._route(hist, m.item_emb(hist))
        np.testing.assert_array_equal(active.numpy(), [[1, 1, 0, 0], [1, 0, 0, 0]])
        v = m.interests(hist).numpy()
        assert (v[0, 2:] == 0).all() and (v[1, 1:] == 0).all()
        assert np.abs(v[0, :2]).sum() > 0 and np.abs(v[1, 0]).sum() > 0
        # Every behaviour is routed to active interests only (coupling sums to 1 over them).
        np.testing.assert_allclose(w.numpy()[0, :2, :5].sum(axis=0), 1.0, atol=1e-6)
        assert (w.numpy()[0, 2:] == 0).all() and (w.numpy()[1, 1:] == 0).all()


@pytest.mark.parametrize("hard", [False, True])
def test_masked_interest_gets_no_attention_even_when_closest(hard: bool) -> None:
    caps = paddle.to_tensor(np.array([[[1.0, 0.0], [0.0, 3.0]]], np.float32))
    target = paddle.to_tensor(np.array([[0.1, 1.0]], np.float32))  # interest 1 is closest
    m = MIND(HyperConfig(item_count=5, embedding_dim=2, hidden_size=2, hard_readout=hard))
    active = paddle.to_tensor(np.array([[1.0, 0.0]], np.float32))
    np.testing.assert_allclose(m.label_aware_attention(caps, target, active).numpy(), [[1.0, 0.0]])


def test_dynamic_k_training_step_is_finite() -> None:
    paddle.seed(1)
    m = MIND(tiny_model(k=4, maxlen=6, d=4, items=30).hp.model_copy(
        update={"dynamic_k": True, "relu_layer": True}))
    m.train()
    loss = m(paddle.to_tensor(np.array([[1, 2, 0, 0, 0, 0], [3, 4, 5, 6, 7, 8]])),
             paddle.to_tensor(np.array([9, 10])))
    loss.backward()
    assert np.isfinite(float(loss))
    assert np.isfinite(m.bilinear.grad.numpy()).all()
