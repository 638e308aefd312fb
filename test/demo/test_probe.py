"""demo/probe.py on made-up tokens: the linear probe and the one-head side reader find a fact
that one region's tokens hold, and only then (the model-level measurement is in
test/core/test_demo.py, on the embedded model)."""
import numpy as np
import torch

from spatialgeo_core.demo import probe


def _tokens(scenes=160, tokens=16, dim=8, holds_side=True, seed=0):
    """Each scene: noise tokens; regions 0 and 1 each mark one token (dims 0 and 1), and that
    token's dim 2 is +1 when the region is right of the camera, -1 when left (0 when the tokens
    do not hold the side)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(scenes, tokens, dim, generator=g) * 0.3
    which, right = [], []
    for i in range(scenes):
        at = torch.randperm(tokens, generator=g)[:2]
        for k in range(2):
            side = bool(torch.rand(1, generator=g) < 0.5)
            x[i, at[k], k] += 3.0
            x[i, at[k], 2] += (1.0 if side else -1.0) * 3.0 * holds_side
            which.append((i, k))
            right.append(side)
    return x, torch.tensor(which), torch.tensor(right)


def test_one_head_learns_the_side_a_regions_token_holds_and_not_one_it_does_not():
    train, test = _tokens(seed=0), _tokens(scenes=60, seed=1)
    curve = probe.side_reader_curve(*train, test, passes=(30,), batch=64, lr=1e-2)
    assert curve[30] >= 90, curve
    blind_train, blind_test = _tokens(seed=0, holds_side=False), _tokens(60, seed=1,
                                                                         holds_side=False)
    blind = probe.side_reader_curve(*blind_train, blind_test, passes=(30,), batch=64, lr=1e-2)
    assert blind[30] <= 70, blind


def test_ridge_and_score_count_the_side_and_lengths_as_reading_does():
    rng = np.random.default_rng(0)
    truth = np.c_[rng.normal(0, 1, 200), rng.uniform(2, 7, 200), rng.uniform(0.4, 1.6, (200, 2))]
    x = np.c_[truth, rng.normal(0, 1, (200, 3))]
    pred = probe.ridge(x[:150], truth[:150], x[150:], lam=1e-3)
    got = probe.score(pred, truth[150:], truth[:150])
    assert got["side_right_pct"] == 100.0 and got["ahead"]["within_25_pct"] == 100.0
    assert got["wide"]["median_prior_within_25_pct"] < 100.0
    noise = probe.score(rng.normal(0, 1, (50, 4)), truth[150:], truth[:150])
    assert noise["ahead"]["within_25_pct"] < 20.0
