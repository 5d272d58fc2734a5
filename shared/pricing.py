"""What a generated answer costs, priced with the breaker's EUR per 1,000 tokens settings."""

from __future__ import annotations

from shared.settings import BreakerSettings

TOKENS_PER_PRICE_UNIT = 1000


def cost_eur(prompt_tokens: int, generated_tokens: int, settings: BreakerSettings) -> float:
    """EUR for `prompt_tokens` read and `generated_tokens` written; negative counts are refused."""
    if prompt_tokens < 0 or generated_tokens < 0:
        raise ValueError(f"token counts must be >= 0, got {prompt_tokens} and {generated_tokens}")
    return (
        prompt_tokens * settings.eur_per_1k_input + generated_tokens * settings.eur_per_1k_output
    ) / TOKENS_PER_PRICE_UNIT
