"""ComiRec's self-attentive extractor (hyper_parameters.extractor: self_attention): the attention
checked by hand on tiny inputs, masking, padding invariance, shapes, the parameters each extractor
owns, export, and an SA checkpoint through trainer.py, UserTower and infer.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from mind.config import ConfigError, HyperConfig, load_config
from mind.network import MIND
from support import DATA_DIR, MODEL_DIR, run, write_config


def sa_model(k: int = 2, maxlen: int = 4, d: int = 2, items: int = 6, **hp) -> MIND:
    return MIND(HyperConfig(item_count=items, embedding_dim=d, hidden_size=d, maxlen=maxlen,
                            neg_samples=8, capsual={"max_k": k}, extractor="self_attention",
                            sparse_embedding=False, **hp))


def interests(m: MIND, hist) -> np.ndarray:
    m.eval()
    return m.interests(paddle.to_tensor(np.asarray(hist, np.int64))).numpy()


def test_two_positions_by_hand() -> None:
    """D = K = hidden = 2, W1 = W2 = I, no biases. H = [e1, e2]; P adds e1 to position 2 only.

    Attention logits tanh(H + P): position 1 -> (tanh 1, tanh 0), position 2 -> (tanh 1, tanh 1).
    Interest 0: logits (tanh 1, tanh 1) -> weights (1/2, 1/2) -> V0 = (1/2, 1/2).
    Interest 1: logits (0, tanh 1) -> weights (1 - s, s), s = sigmoid(tanh 1) -> V1 = (1 - s, s).
    V = A H uses H alone: P moves the weights, never the vectors' content.
    """
    m = sa_model(attention_hidden_size=2)
    m.item_emb.weight.set_value(np.array([[0, 0], [1, 0], [0, 1], [5, 5], [0, 0], [0, 0]],
                                         np.float32))
    sa = m.self_attention
    sa.pos_emb.set_value(np.array([[0, 0], [1, 0], [7, -3], [9, 9]], np.float32))
    for layer in (sa.w1, sa.w2):
        layer.weight.set_value(np.eye(2, dtype=np.float32))
        layer.bias.set_value(np.zeros(2, np.float32))
    s = 1 / (1 + np.exp(-np.tanh(1.0)))
    want = np.array([[0.5, 0.5], [1 - s, s]])
    np.testing.assert_allclose(interests(m, [[1, 2]])[0], want, rtol=1e-6)
    # The same history padded to maxlen (positions 3 and 4 carry large P rows: masked out).
    np.testing.assert_allclose(interests(m, [[1, 2, 0, 0]])[0], want, rtol=1e-6)
    a = m.coupling(paddle.to_tensor([[1, 2, 0, 0]])).numpy()[0]
    np.testing.assert_allclose(a, [[0.5, 0.5, 0, 0], [1 - s, s, 0, 0]], rtol=1e-6)
    assert (a[:, 2:] == 0).all()
    # W2's bias is the same at every position, so it cancels in the softmax over positions.
    sa.w2.bias.set_value(np.array([0.0, 10.0], np.float32))
    np.testing.assert_allclose(interests(m, [[1, 2]])[0], want, rtol=1e-5)


def test_shapes_and_weights_sum_to_one_over_real_positions() -> None:
    paddle.seed(1)
    m = sa_model(k=4, maxlen=6, d=8, items=30)
    hist = np.array([[3, 5, 7, 0, 0, 0], [1, 2, 3, 4, 5, 6], [9, 0, 0, 0, 0, 0]])
    v = interests(m, hist)
    a = m.coupling(paddle.to_tensor(hist)).numpy()
    assert v.shape == (3, 4, 8) and a.shape == (3, 4, 6)
    np.testing.assert_allclose(a.sum(axis=2), 1.0, rtol=1e-6)
    assert (a[hist[:, None, :].repeat(4, 1) == 0] == 0).all()  # exactly zero, not ~1e-28
    # One real item: every interest is that item's embedding.
    e9 = m.item_emb.weight.numpy()[9]
    np.testing.assert_allclose(v[2], np.tile(e9, (4, 1)), rtol=1e-6)
    # W1 is d -> 4d with bias, W2 4d -> K with bias; P is [maxlen, d].
    sa = m.self_attention
    assert sa.w1.weight.shape == [8, 32] and sa.w1.bias.shape == [32]
    assert sa.w2.weight.shape == [32, 4] and sa.w2.bias.shape == [4]
    assert sa.pos_emb.shape == [6, 8]


def test_padding_invariance_and_interior_padding() -> None:
    paddle.seed(2)
    m = sa_model(k=3, maxlen=10, d=4, items=40)
    real = [4, 8, 15, 16, 23]
    short = interests(m, [real])
    for width in (6, 10):
        np.testing.assert_array_equal(interests(m, [real + [0] * (width - 5)]), short)
    # In a batch beside a full history, and with a padded slot inside the history: the padded
    # slot contributes nothing, the other items keep their positions.
    batch = interests(m, [real + [0] * 5, list(range(30, 40))])
    np.testing.assert_array_equal(batch[0], short[0])
    a = m.coupling(paddle.to_tensor([[4, 0, 15, 0, 0]])).numpy()[0]
    assert (a[:, [1, 3, 4]] == 0).all() and np.allclose(a.sum(axis=1), 1.0)


def test_empty_history_gives_zero_interests_and_finite_gradients() -> None:
    paddle.seed(3)
    m = sa_model(k=2, maxlen=5, d=4, items=20)
    v = interests(m, [[0, 0, 0, 0, 0], [1, 2, 0, 0, 0]])
    assert np.isfinite(v).all() and (v[0] == 0).all() and np.abs(v[1]).sum() > 0
    m.train()
    loss = m(paddle.to_tensor(np.array([[0, 0, 0, 0, 0], [1, 2, 3, 0, 0]])),
             paddle.to_tensor(np.array([4, 5])))
    loss.backward()
    assert np.isfinite(float(loss))
    for p in m.parameters():
        assert p.grad is None or np.isfinite(p.grad.numpy()).all(), p.name


def test_dynamic_k_zeroes_the_heads_beyond_k_u() -> None:
    paddle.seed(4)
    m = sa_model(k=4, maxlen=20, d=4, items=40, dynamic_k=True)
    v = interests(m, [[1, 2, 3] + [0] * 17, list(range(1, 21))])
    # 3 items: K'_u = max(1, min(4, floor(log2 3))) = 1; 20 items: 4.
    assert (np.abs(v[0]).sum(axis=1) > 0).tolist() == [True, False, False, False]
    assert (np.abs(v[1]).sum(axis=1) > 0).all()


def test_each_extractor_owns_only_its_parameters() -> None:
    routing = MIND(HyperConfig(item_count=10, embedding_dim=4, hidden_size=4))
    sa = sa_model(k=4, maxlen=20, d=4, items=10)
    assert sorted(routing.state_dict()) == ["bilinear", "eval_routing_logits", "item_emb.weight"]
    assert sorted(sa.state_dict()) == ["item_emb.weight", "self_attention.pos_emb",
                                       "self_attention.w1.bias", "self_attention.w1.weight",
                                       "self_attention.w2.bias", "self_attention.w2.weight"]


def test_config_extractor_keys() -> None:
    hp = HyperConfig(item_count=10, extractor="self_attention")
    assert hp.attention_hidden == 4 * 64
    assert HyperConfig(item_count=10, extractor="self_attention",
                       attention_hidden_size=32).attention_hidden == 32
    assert HyperConfig(item_count=10).extractor == "routing"


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    mind_dir = MODEL_DIR / "mind"
    with pytest.raises(ConfigError, match=r"'hyper_parameters\.extractor' must be routing or "
                                          r"self_attention, got 'attention'"):
        load_config(mind_dir / "config_synthetic.yaml",
                    ["hyper_parameters.item_count=50", "hyper_parameters.extractor=attention"])
    with pytest.raises(ConfigError, match=r"'hyper_parameters\.attention_hidden_size' is only "
                                          r"used with extractor: self_attention"):
        load_config(mind_dir / "config_synthetic.yaml",
                    ["hyper_parameters.item_count=50", "hyper_parameters.attention_hidden_size=8"])


@pytest.mark.parametrize("name", ["config_sa.yaml", "config_synthetic_sa.yaml",
                                  "config_movielens_sa.yaml"])
def test_shipped_sa_configs(name: str) -> None:
    c = load_config(MODEL_DIR / "mind" / name, ["hyper_parameters.item_count=500"])
    hp = c.hyper_parameters
    assert (hp.extractor, hp.hard_readout, hp.optimizer.learning_rate) == ("self_attention", True,
                                                                            0.001)
    assert c.runner.model_save_path.name.endswith("_sa")
    for line in (MODEL_DIR / "mind" / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#") and not line.rstrip().endswith(":"):
            assert "# (" in line, line


def test_interests_export_with_to_static_matches_dygraph(tmp_path: Path) -> None:
    """paddle.jit.to_static with a dynamic batch and history length gives the same interests."""
    paddle.seed(5)
    m = sa_model(k=3, maxlen=8, d=4, items=30)
    m.eval()
    hist = paddle.to_tensor(np.array([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8]], np.int64))
    want = m.interests(hist).numpy()
    spec = [paddle.static.InputSpec([None, None], "int64", name="hist")]
    static = paddle.jit.to_static(m.interests, input_spec=spec, full_graph=True)
    np.testing.assert_allclose(static(hist).numpy(), want, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def sa_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sa")
    data = root / "data"
    run(["sh", "data.sh", "synthetic", "--out", str(data), "--items", "400", "--categories", "8",
         "--users", "600", "--min-len", "8", "--max-len", "20"], cwd=DATA_DIR)
    config = write_config(
        root / "config.yaml", data, root / "model",
        runner={"epochs": 3, "train_batch_size": 64, "samples_per_epoch": 3200,
                "print_interval": 1000, "infer_end_epoch": 2, "seed": 7},
        hyper={"neg_samples": 64, "extractor": "self_attention", "hard_readout": True,
               "optimizer": {"class": "Adam", "learning_rate": 0.005}},
    )
    run([sys.executable, "-u", "trainer.py", "-m", str(config)], cwd=MODEL_DIR)
    return root, config


def test_sa_checkpoint_trains_and_serves(sa_run) -> None:
    from mind.user_tower import UserTower

    root, config = sa_run
    log = [json.loads(x) for x in (root / "model" / "train_log.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in log]
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0], losses
    tower = UserTower.load(config)
    v = tower.interests([[1, 2, 3], [5], []])
    assert v.shape == (3, 4, 64) and np.isfinite(v).all() and (v[2] == 0).all()
    assert "self_attention.pos_emb" in tower.model.state_dict()
    out = root / "infer.json"
    run([sys.executable, "-u", "infer.py", "-m", str(config), "--search", "exact", "--baselines",
         "--json", str(out)], cwd=MODEL_DIR)
    results = json.loads(out.read_text())["results"]
    mind = [r for r in results if r["epoch"] is not None]
    popular = next(r for r in results if r["name"] == "MostPopular")
    assert [r["epoch"] for r in mind] == [0, 1, 2]
    assert max(r["metrics"]["50"]["recall"] for r in mind) > popular["metrics"]["50"]["recall"]


def test_history_longer_than_maxlen_is_refused() -> None:
    with pytest.raises(ValueError, match="history length 5 > maxlen 4"):
        interests(sa_model(), [[1, 2, 3, 4, 5]])
