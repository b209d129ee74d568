from __future__ import annotations

import numpy as np
import pytest
import torch

from gpt_trader.ml.transformer.attention import MarketAttention
from gpt_trader.ml.transformer.encoding import PositionalEncoding, calendar_features
from gpt_trader.ml.transformer.model import MarketTransformer

torch.set_num_threads(1)
F = 6


def make_model(n_assets: int = 1, **kwargs: object) -> MarketTransformer:
    torch.manual_seed(0)
    options: dict[str, object] = {"d_model": 16, "n_heads": 2, "n_layers": 2, "d_ff": 32, "dropout": 0.0}
    options.update(kwargs)
    return MarketTransformer(F, n_assets, market_features=(0, 1), **options).eval()  # type: ignore[arg-type]


def inputs(batch: int, steps: int, assets: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, assets, F, generator=g)
    calendar = torch.stack(
        [torch.arange(steps).float() * 60 % 1440, torch.arange(steps).float() % 7, *(torch.ones(steps),) * 3], -1
    ).expand(batch, steps, 5)
    return x, calendar


def test_market_transformer_output_shapes_per_asset_and_step():
    model = make_model(n_assets=3)
    x, cal = inputs(4, 10, 3)
    logits, expected = model(x, cal)
    assert logits.shape == (4, 10, 3, 3)
    assert expected.shape == (4, 10, 3)
    _, _, attention = model.forward_with_attention(x, cal)
    assert attention.shape == (2, 4, 3, 2, 10, 10)  # layers, batch, assets, heads, query, key


@pytest.mark.parametrize("n_assets", [1, 3])
def test_market_transformer_forward_last_equals_the_last_step_of_forward(n_assets: int):
    model = make_model(n_assets=n_assets, n_layers=3)
    x, cal = inputs(5, 16, n_assets, seed=2)
    with torch.no_grad():
        logits, expected = model(x, cal)
        last_logits, last_expected = model.forward_last(x, cal)
    assert last_logits.shape == (5, n_assets, 3)
    torch.testing.assert_close(last_logits, logits[:, -1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last_expected, expected[:, -1], rtol=1e-5, atol=1e-6)


def test_market_transformer_future_inputs_changed_output_up_to_t_unchanged():
    model = make_model(n_assets=2)
    x, cal = inputs(2, 12, 2)
    t = 6
    future = x.clone()
    future[:, t + 1 :] = torch.randn_like(future[:, t + 1 :]) * 10
    cal_future = cal.clone()
    cal_future[:, t + 1 :, 0] = 999.0
    with torch.no_grad():
        a_logits, a_ret = model(x, cal)
        b_logits, b_ret = model(future, cal_future)
    torch.testing.assert_close(a_logits[:, : t + 1], b_logits[:, : t + 1])
    torch.testing.assert_close(a_ret[:, : t + 1], b_ret[:, : t + 1])
    assert not torch.allclose(a_logits[:, t + 1 :], b_logits[:, t + 1 :])


def test_market_attention_fused_path_equals_explicit_masked_scores():
    torch.manual_seed(1)
    attention = MarketAttention(16, 4).eval()
    x, market = torch.randn(3, 20, 16), torch.randn(3, 20, 2)
    with torch.no_grad():
        fused, _ = attention(x, market)
        explicit, weights = attention(x, market, return_weights=True)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-5)
    assert weights is not None
    assert torch.all(weights.triu(1) == 0)  # causal: no weight on later bars
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 20))


def test_market_attention_volume_spike_changes_attention_weights():
    torch.manual_seed(2)
    attention = MarketAttention(16, 2).eval()
    x, market = torch.randn(1, 12, 16), torch.zeros(1, 12, 2)
    spiked = market.clone()
    spiked[0, 3, 0] = 5.0  # high volume on bar 3
    with torch.no_grad():
        _, base = attention(x, market, return_weights=True)
        _, moved = attention(x, spiked, return_weights=True)
        bias = attention.bias(spiked) - attention.bias(market)
    assert base is not None
    assert moved is not None
    assert not torch.allclose(base, moved)
    # Each head shifts attention towards (or away from) bar 3 by exactly its learned bias for that bar.
    for head in range(2):
        direction = torch.sign(bias[0, head, 3])
        assert torch.all(torch.sign(moved[0, head, 3:, 3] - base[0, head, 3:, 3]) == direction)


def test_market_attention_zero_bias_weights_ignore_volume_and_volatility():
    torch.manual_seed(3)
    attention = MarketAttention(16, 2).eval()
    torch.nn.init.zeros_(attention.market_bias[-1].weight)
    torch.nn.init.zeros_(attention.market_bias[-1].bias)
    x = torch.randn(1, 10, 16)
    with torch.no_grad():
        _, a = attention(x, torch.zeros(1, 10, 2), return_weights=True)
        _, b = attention(x, torch.randn(1, 10, 2) * 5, return_weights=True)
    assert a is not None
    assert b is not None
    torch.testing.assert_close(a, b)


def test_positional_encoding_calendar_time_changes_encoding():
    enc = PositionalEncoding(8, max_len=50)
    x = torch.zeros(1, 4, 1, 8)
    monday = torch.tensor([[[600.0, 0, 1, 0, 0]] * 4])
    friday = torch.tensor([[[600.0, 4, 1, 0, 0]] * 4])
    assert not torch.allclose(enc(x, monday), enc(x, friday))
    # Positions differ along the window even with a constant calendar.
    out = enc(x, monday)
    assert not torch.allclose(out[0, 0], out[0, 1])


def test_calendar_features_minute_of_day_is_cyclic():
    midnight = calendar_features(torch.tensor([[0.0, 0, 0, 0, 0]]))
    wrapped = calendar_features(torch.tensor([[1440.0, 7, 0, 0, 0]]))
    torch.testing.assert_close(midnight, wrapped, atol=1e-6, rtol=0)


def test_positional_encoding_window_longer_than_max_len_raises():
    enc = PositionalEncoding(8, max_len=5)
    with pytest.raises(ValueError, match="exceeds"):
        enc(torch.zeros(1, 6, 1, 8), torch.zeros(1, 6, 5))


def test_market_transformer_wrong_feature_count_raises():
    model = make_model()
    with pytest.raises(ValueError, match="expected"):
        model(torch.zeros(1, 4, 1, F + 1), torch.zeros(1, 4, 5))


@pytest.mark.slow
def test_market_transformer_1000_step_sequence_trains_and_predicts():
    torch.manual_seed(0)
    model = MarketTransformer(F, 2, d_model=64, n_heads=4, n_layers=2, dropout=0.1, max_seq_length=1000)
    x, cal = inputs(4, 1000, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    logits, expected = model(x, cal)
    loss = logits.logsumexp(-1).mean() + expected.pow(2).mean()
    loss.backward()
    optimizer.step()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        logits, _ = model(x[:1], cal[:1])
        _, _, attention = model.forward_with_attention(x[:1], cal[:1])
    assert logits.shape == (1, 1000, 2, 3)
    assert np.isfinite(logits.numpy()).all()
    assert attention.shape[-1] == 1000


@pytest.mark.parametrize("n_assets", [1, 3])
def test_sliding_step_by_step_equals_forward_at_every_bar_and_forward_last_on_a_window(n_assets: int):
    model = make_model(n_assets=n_assets, attention_window=4)
    assert model.receptive_field == 7
    x, cal = inputs(3, 20, n_assets, seed=3)
    with torch.no_grad():
        logits, expected = model(x, cal)
        cache = model.new_cache(3)
        for t in range(20):
            step_logits, step_expected = model.step(x[:, t], cal[:, t], cache)
            torch.testing.assert_close(step_logits, logits[:, t], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(step_expected, expected[:, t], rtol=1e-5, atol=1e-5)
        # Any window holding the receptive field gives the streamed answer: the window start does not matter.
        for start in (0, 5, 20 - 7):
            window_logits, _ = model.forward_last(x[:, start:], cal[:, start:])
            torch.testing.assert_close(window_logits, step_logits, rtol=1e-5, atol=1e-5)


def test_sliding_output_ignores_bars_beyond_the_receptive_field():
    model = make_model(n_assets=2, attention_window=3)  # 2 layers: a step sees its last 5 bars
    x, cal = inputs(2, 12, 2, seed=4)
    old = x.clone()
    old[:, :7] = torch.randn_like(old[:, :7]) * 10  # bars 0..6; the last step (11) sees 7..11
    with torch.no_grad():
        torch.testing.assert_close(model.forward_last(old, cal)[0], model.forward_last(x, cal)[0])
        changed = x.clone()
        changed[:, 7] += 5.0
        assert not torch.allclose(model.forward_last(changed, cal)[0], model.forward_last(x, cal)[0])


# None: every stream, no rows given (in step when all are at one bar count: the cache's slice path).
SCHEDULES = {
    "subsets": ([0, 1, 2], [1], [0, 2], [1], [1], [0, 1, 2], [2], [0], [0, 1], [2, 1]),
    "all, apart and back in step": (None, None, [1], None, [0, 2], None, None, [2], [0, 1], None, None, None),
}


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_sliding_step_on_a_subset_of_streams_leaves_the_others_untouched(schedule):
    model = make_model(n_assets=2, attention_window=3)
    x, cal = inputs(3, 12, 2, seed=5)
    with torch.no_grad():
        logits, _ = model(x, cal)
        cache = model.new_cache(3)
        done = [0, 0, 0]
        for step in schedule:
            streams = [0, 1, 2] if step is None else step
            rows = None if step is None else torch.tensor(step)
            got, _ = model.step(
                torch.stack([x[s, done[s]] for s in streams]), torch.stack([cal[s, done[s]] for s in streams]),
                cache, rows,
            )  # fmt: skip
            for i, s in enumerate(streams):
                torch.testing.assert_close(got[i], logits[s, done[s]], rtol=1e-5, atol=1e-5)
                done[s] += 1


def test_full_causal_model_refuses_to_step():
    with pytest.raises(RuntimeError, match="attention_window"):
        make_model().new_cache(1)


def test_attention_window_beyond_the_sequence_length_is_refused_with_the_limit():
    from gpt_trader.ml.transformer.config import TransformerConfig

    assert TransformerConfig(n_layers=2, max_seq_length=64, attention_window=32).receptive_field == 63
    with pytest.raises(ValueError, match="at most 32"):
        TransformerConfig(n_layers=2, max_seq_length=64, attention_window=33)
