"""OpenAI's rate-limit headers: `x-ratelimit-{limit,remaining,reset}-{tokens,requests}` and their
reset durations ('6m0s', '1.5s', '20ms')."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_reset_duration(value: str) -> float | None:
    """Parse OpenAI's reset durations ('6m0s', '1.5s', '20ms', '1h2m') into seconds."""
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def format_reset_duration(seconds: float) -> str:
    """The inverse, in OpenAI's style: '0s', '250ms', '1.5s', '2m3.5s'."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    rest_text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{rest_text}" if minutes else rest_text


@dataclass(frozen=True)
class RateLimitHeaders:
    """The x-ratelimit-* headers of one response (absent ones are None)."""

    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None
    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None

    @classmethod
    def parse(cls, headers: Mapping[str, str]) -> RateLimitHeaders:
        lowered = {key.lower(): value for key, value in headers.items()}

        def integer(name: str) -> int | None:
            raw = lowered.get(name)
            try:
                return int(float(raw)) if raw is not None else None
            except ValueError:
                return None

        def duration(name: str) -> float | None:
            raw = lowered.get(name)
            return parse_reset_duration(raw) if raw is not None else None

        return cls(
            limit_tokens=integer("x-ratelimit-limit-tokens"),
            remaining_tokens=integer("x-ratelimit-remaining-tokens"),
            reset_tokens_s=duration("x-ratelimit-reset-tokens"),
            limit_requests=integer("x-ratelimit-limit-requests"),
            remaining_requests=integer("x-ratelimit-remaining-requests"),
            reset_requests_s=duration("x-ratelimit-reset-requests"),
        )
