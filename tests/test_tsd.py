import torch

from lora_tsd.methods import tsd


def _brute(dec, dW):
    return torch.diag(dec.U.T @ dW @ dec.Vh.T).abs() / dec.S


def test_change_rates_match_brute_force_diag():
    torch.manual_seed(0)
    W, B, A = torch.randn(40, 24), torch.randn(40, 5), torch.randn(5, 24)
    dec = tsd.svd(W, torch.float64)
    expected = _brute(dec, 0.7 * (B.double() @ A.double()))
    torch.testing.assert_close(tsd.change_rates(dec, B, A, scale=0.7), expected)
    torch.testing.assert_close(tsd.change_rates_full(dec, 0.7 * B @ A), expected, rtol=1e-5, atol=1e-6)


def test_planted_direction_is_selected():
    torch.manual_seed(1)
    W = torch.randn(32, 32)
    dec = tsd.svd(W)
    k = 13  # a mid-spectrum direction, as the paper finds TSDs
    B = dec.U[:, k:k + 1] * 0.5
    A = dec.Vh[k:k + 1]
    noise_B, noise_A = 1e-3 * torch.randn(32, 3), torch.randn(3, 32)
    rates = tsd.change_rates(dec, torch.cat([B, noise_B], 1), torch.cat([A, noise_A], 0))
    assert tsd.top_directions(rates, 1).tolist() == [k]
    assert rates[k] == torch.max(rates)


def test_zero_singular_values_get_zero_rate():
    W = torch.zeros(6, 6)
    W[0, 0], W[1, 1] = 3.0, 2.0  # rank 2
    dec = tsd.svd(W)
    rates = tsd.change_rates(dec, torch.ones(6, 2), torch.ones(2, 6))
    assert torch.isfinite(rates).all()
    assert (rates[2:] == 0).all() and (rates[:2] > 0).all()


def test_rank_deficient_float32_noise_directions_are_not_selected():
    # A rank-4 float32 product: its trailing singular values are rounding noise (~1e-7 relative),
    # far above a fixed 1e-10 cutoff, where |proj| / s_i would give them rates of 1e3-1e5.
    torch.manual_seed(2)
    W = torch.randn(48, 4) @ torch.randn(4, 32)
    dec = tsd.svd(W)
    assert (dec.S[4:] > 1e-10 * dec.S[0]).any()  # the noise the old cutoff let through
    live = tsd.live_directions(dec)
    assert live[:4].all() and not live[4:].any()
    B, A = torch.randn(48, 3), torch.randn(3, 32)
    rates = tsd.change_rates(dec, B, A)
    assert (rates[4:] == 0).all() and (rates[:4] > 0).all()
    assert sorted(tsd.top_directions(rates, 4).tolist()) == [0, 1, 2, 3]
    torch.testing.assert_close(tsd.change_rates_full(dec, B @ A)[4:], torch.zeros(dec.S.numel() - 4))


def test_top_directions_order_and_ties():
    rates = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.0])
    assert tsd.top_directions(rates, 3).tolist() == [3, 1, 2]
    assert tsd.top_directions(rates, 10).tolist() == [3, 1, 2, 0, 4]


def test_svd_cache_hits_on_identical_weights(tmp_path):
    cache = tsd.SVDCache(tmp_path)
    W = torch.randn(20, 10)
    first = cache.get(W)
    again = tsd.SVDCache(tmp_path).get(W.clone())
    assert cache.misses == 1 and len(list(tmp_path.glob("*.pt"))) == 1
    torch.testing.assert_close(first.S, again.S, rtol=0, atol=0)
    other = tsd.SVDCache(tmp_path)
    other.get(W, torch.float64)  # another precision is another entry
    other.get(W)
    assert other.misses == 1 and other.hits == 1
    assert "1 hits" in other.report()


def test_svd_reconstructs_weight():
    W = torch.randn(16, 9)
    dec = tsd.svd(W, torch.float64)
    torch.testing.assert_close((dec.U * dec.S) @ dec.Vh, W.double(), rtol=1e-10, atol=1e-10)


def test_a_truncated_svd_cache_entry_is_set_aside_and_recomputed(tmp_path, capsys):
    torch.manual_seed(3)
    W = torch.randn(16, 12)
    cache = tsd.SVDCache(tmp_path)
    first = cache.get(W)
    entry = next(tmp_path.glob("*.pt"))
    entry.write_bytes(entry.read_bytes()[:100])
    again = tsd.SVDCache(tmp_path)
    dec = again.get(W)
    assert again.misses == 1 and again.hits == 0
    torch.testing.assert_close(dec.S, first.S)
    assert (tmp_path / (entry.name + ".corrupt")).exists() and entry.exists()  # recomputed and rewritten
    assert f"{entry} could not be loaded" in capsys.readouterr().out
    assert tsd.SVDCache(tmp_path).get(W) is not None
