"""Cost of an answer from the breaker's prices."""

from __future__ import annotations

import pytest

from shared.pricing import cost_eur
from shared.settings import load_settings


def test_cost_prices_input_and_output_separately() -> None:
    prices = load_settings(breaker={"eur_per_1k_input": 0.5, "eur_per_1k_output": 2.0}).breaker
    assert cost_eur(1000, 0, prices) == pytest.approx(0.5)
    assert cost_eur(0, 1000, prices) == pytest.approx(2.0)
    assert cost_eur(600, 200, prices) == pytest.approx(0.3 + 0.4)


def test_default_prices_give_a_small_positive_cost() -> None:
    assert 0 < cost_eur(600, 200, load_settings().breaker) < 0.01


def test_negative_token_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        cost_eur(-1, 5, load_settings().breaker)
