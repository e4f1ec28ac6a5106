"""Offline AmazonBook-shaped click data with planted multiple interests.

Generative story (all vectorised numpy, deterministic from the seed):
- items fall into categories (sizes drawn from a mild Zipf over categories); inside a category
  item popularity is Zipf(`item_zipf`) over a random rank order, categories are Zipf(`cat_zipf`)
  popular, so overall popularity is Zipf-like within and across categories;
- each user holds 1-4 latent interests (distinct categories, drawn by category popularity,
  the number uniform in 1..4) and a sequence length uniform in [min_len, max_len];
- the sequence is a Markov chain over the user's interests: stay with `stay`, otherwise switch to
  the next of the user's interests (cyclically); each click draws an item of the current
  category by popularity, redrawing repeats of the user's earlier items for `dedup_rounds`
  rounds; with probability `noise` the click is instead a random item by global popularity;
- item ids are remapped by descending click frequency (1 = most clicked, 0 = padding, never
  clicked items last), and item_count = number of catalogue items + 1.

Ground truth, `truth.npz` in the output directory:
- item_category: int64 [item_count], the category of each item id, -1 for the padding id 0;
- user_ids: int64 [U], every generated user id (in every split);
- user_interests: int64 [U, 4], the planted categories of user_ids[i], padded with -1.
Few items repeat within a user's sequence (those the redraw rounds could not avoid, and noise).

`item_map.tsv` names the items as a shop would: key `p0017` for id 17, title "Product 17" and
the readable name of its planted category (CATEGORY_NAMES, numbered past the first 40).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .clicks import Clicks
from .itemmap import ITEM_MAP_FILE, write_item_map
from .output import remap_by_frequency, write_dataset
from .protocol import drop_short, split_users

MAX_INTERESTS = 4
CATEGORY_NAMES = (
    "Books", "Music", "Movies", "Games", "Toys", "Baby", "Kitchen", "Garden", "Tools", "Lighting",
    "Furniture", "Bedding", "Bath", "Pets", "Grocery", "Coffee", "Wine", "Beauty", "Health",
    "Fitness", "Cycling", "Camping", "Fishing", "Running", "Shoes", "Bags", "Watches", "Jewellery",
    "Menswear", "Womenswear", "Kidswear", "Phones", "Laptops", "Cameras", "Audio", "Television",
    "Office", "Stationery", "Crafts", "Automotive",
)


@dataclass(frozen=True)
class SyntheticConfig:
    items: int = 3000
    categories: int = 40
    users: int = 4000
    min_len: int = 20
    max_len: int = 60
    seed: int = 0
    stay: float = 0.75
    noise: float = 0.02
    dedup_rounds: int = 4
    item_zipf: float = 0.9
    cat_zipf: float = 0.5


FULL = {"items": 367_982, "categories": 1_000, "users": 603_668, "min_len": 5, "max_len": 25}
"""`--full`: the AmazonBook catalogue (367,983 rows incl. 0) and user count, ~9M clicks."""


@dataclass(frozen=True)
class Generated:
    clicks: Clicks  # every user, item ids already remapped by frequency
    item_category: np.ndarray  # [n_items + 1], -1 at 0
    user_interests: np.ndarray  # [U, MAX_INTERESTS], -1 padded


def _zipf(n: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** a
    return w / w.sum()


def _draw_interests(rng: np.random.Generator, cfg: SyntheticConfig) -> np.ndarray:
    """[U, 4] distinct categories per user by category popularity, -1 beyond each user's count."""
    cat_p = _zipf(cfg.categories, cfg.cat_zipf)
    n_int = rng.integers(1, min(MAX_INTERESTS, cfg.categories) + 1, size=cfg.users)
    interests = np.full((cfg.users, MAX_INTERESTS), -1, dtype=np.int64)
    for slot in range(MAX_INTERESTS):
        rows = np.flatnonzero(n_int > slot)
        # Redraw only the rows that collide with an earlier slot; collisions are rare.
        while rows.size:
            interests[rows, slot] = rng.choice(cfg.categories, size=rows.size, p=cat_p)
            clash = (interests[rows, :slot] == interests[rows, slot : slot + 1]).any(axis=1)
            rows = rows[clash]
    return interests


def generate(cfg: SyntheticConfig) -> Generated:
    """Draw the catalogue, the users' interests and their click sequences."""
    if cfg.categories > cfg.items or cfg.min_len > cfg.max_len or cfg.min_len < 1:
        raise ValueError("need categories <= items and 1 <= min_len <= max_len")
    rng = np.random.default_rng([cfg.seed, 1])
    # Catalogue: every category gets at least one item, the rest by a mild Zipf over categories.
    cat_of = np.r_[
        np.arange(cfg.categories),
        rng.choice(cfg.categories, size=cfg.items - cfg.categories, p=_zipf(cfg.categories, 0.3)),
    ]
    rng.shuffle(cat_of)
    by_cat = np.lexsort((rng.random(cfg.items), cat_of))  # items grouped by category, random rank
    block = np.searchsorted(cat_of[by_cat], np.arange(cfg.categories + 1))
    sizes = np.diff(block)
    rank = np.arange(cfg.items) - np.repeat(block[:-1], sizes)
    w = 1.0 / (rank + 1.0) ** cfg.item_zipf
    within = w / np.repeat(np.add.reduceat(w, block[:-1]), sizes)
    cum = np.cumsum(within) - np.repeat(np.cumsum(within)[block[:-1]] - within[block[:-1]], sizes)
    keys = np.repeat(np.arange(cfg.categories, dtype=np.float64), sizes) + cum
    keys[block[1:] - 1] = np.arange(1, cfg.categories + 1)  # exact block ends: no float spill
    global_p = within * np.repeat(_zipf(cfg.categories, cfg.cat_zipf), sizes)
    global_cdf = np.cumsum(global_p)
    global_cdf[-1] = np.inf

    interests = _draw_interests(rng, cfg)
    n_int = (interests >= 0).sum(axis=1)
    lens = rng.integers(cfg.min_len, cfg.max_len + 1, size=cfg.users)
    offsets = np.r_[0, np.cumsum(lens)]
    total = int(offsets[-1])
    user = np.repeat(np.arange(cfg.users), lens)
    first = np.zeros(total, dtype=bool)
    first[offsets[:-1]] = True

    # Markov stay/switch: a switch moves to the user's next interest (cyclically, in the
    # user's random interest order), so even short sequences visit several interests; the slot
    # is a per-user running count of switches from a random starting interest.
    n_rep = n_int[user]
    step = ((rng.random(total) >= cfg.stay) & ~first & (n_rep > 1)).astype(np.int64)
    step[first] = np.floor(rng.random(cfg.users) * n_int).astype(np.int64)
    run = np.cumsum(step)
    slot = (run - np.repeat(run[offsets[:-1]] - step[offsets[:-1]], lens)) % n_rep
    cat = interests[user, slot]
    picked = by_cat[np.searchsorted(keys, cat + rng.random(total), side="right")]
    cand = np.arange(total)  # clicks of the users that may still hold repeats
    for _ in range(cfg.dedup_rounds):
        # Redraw a user's repeated clicks of an item from the same category: real AmazonBook
        # users rarely review a book twice. Repeats left after the last round are kept.
        key = user[cand] * cfg.items + picked[cand]
        order = np.argsort(key, kind="stable")  # stable: the later click is the one redrawn
        sorted_key = key[order]
        idx = cand[order[1:][sorted_key[1:] == sorted_key[:-1]]]
        if not idx.size:
            break
        picked[idx] = by_cat[np.searchsorted(keys, cat[idx] + rng.random(idx.size), side="right")]
        again = np.zeros(cfg.users, dtype=bool)
        again[user[idx]] = True
        cand = np.flatnonzero(again[user])
    noisy = rng.random(total) < cfg.noise
    picked[noisy] = by_cat[np.searchsorted(global_cdf, rng.random(int(noisy.sum())), side="right")]

    items, new_id = remap_by_frequency(picked, cfg.items)
    item_category = np.full(cfg.items + 1, -1, dtype=np.int64)
    item_category[new_id] = cat_of
    clicks = Clicks(np.arange(cfg.users, dtype=np.int64), offsets.astype(np.int64), items)
    return Generated(clicks, item_category, interests)


def category_name(c: int) -> str:
    """A readable, distinct name per category: "Garden", ..., then "Garden 2" past the list."""
    name = CATEGORY_NAMES[c % len(CATEGORY_NAMES)]
    return name if c < len(CATEGORY_NAMES) else f"{name} {c // len(CATEGORY_NAMES) + 1}"


def write_catalogue(path: Path, item_category: np.ndarray) -> None:
    """item_map.tsv of ids 1..N (module docstring)."""
    ids = range(1, len(item_category))
    width = max(4, len(str(len(item_category) - 1)))
    names = [category_name(c) for c in range(int(item_category.max()) + 1)]
    write_item_map(path, [f"p{i:0{width}d}" for i in ids],
                   {"title": [f"Product {i}" for i in ids],
                    "category": [names[c] for c in item_category[1:].tolist()]})


def prepare(out_dir: Path, cfg: SyntheticConfig, full: bool) -> dict:
    """Generate, split by the ComiRec protocol and write the dataset plus truth.npz."""
    t0 = time.perf_counter()
    gen = generate(cfg)
    seconds = time.perf_counter() - t0
    print(f"generated {len(gen.clicks.items):,} clicks for {cfg.users:,} users in {seconds:.2f} s")
    kept, dropped = drop_short(gen.clicks)
    splits = split_users(kept, cfg.seed)

    def write_truth(tmp: Path) -> None:
        np.savez(
            tmp / "truth.npz",
            item_category=gen.item_category,
            user_ids=gen.clicks.user_ids,
            user_interests=gen.user_interests,
        )
        write_catalogue(tmp / ITEM_MAP_FILE, gen.item_category)

    never = int(cfg.items - np.count_nonzero(np.bincount(gen.clicks.items)))
    meta = {
        "source": "synthetic (recdata.synthetic, planted multiple interests)",
        "seed": cfg.seed,
        "options": {**asdict(cfg), "full": full},
        "dropped_short_users": dropped,
        "never_clicked_items": never,
        "generation_seconds": round(seconds, 3),
    }
    return write_dataset(out_dir, splits, cfg.items + 1, meta, extra=write_truth)
