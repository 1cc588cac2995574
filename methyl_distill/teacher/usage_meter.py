"""What the teacher's requests use right now: tokens settled in the last minute, and refused requests.

`MeteredBudget` wraps the run's `TokenBudget` and passes every call through unchanged. Every HTTP
attempt of `OpenAITeacher` is settled on its budget with `reconcile(reservation, actual_tokens)`:
with the tokens the server reported, with the estimated prompt after a failure, and with 0 after a
429 (the request was refused and consumed nothing; see the openai_client docstring). So the tokens
settled over the last 60 s are the run's tokens per minute as the provider counts them, and a
settlement of 0 is a refused request. (The one other settlement of 0 is a request given back
because the run is stopping before it was sent; the count is for watching a run, not for billing.)

It sits between the client and the budget only while someone watches the run (the command's
console, `methyl_distill.ops.run_progress`); a deployment's run talks to its budget directly.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from methyl_distill.teacher.token_bucket import Reservation, TokenBudget

WINDOW_S = 60.0


class MeteredBudget:
    """A `TokenBudget` that also counts what is settled through it (thread-safe)."""

    def __init__(
        self, inner: TokenBudget, *, clock: Callable[[], float] = time.monotonic, window_s: float = WINDOW_S
    ) -> None:
        self.inner = inner
        self._clock = clock
        self._window_s = window_s
        self._lock = threading.Lock()
        self._settled: deque[tuple[float, int]] = deque()
        self.refused = 0
        self.attempts = 0

    def __repr__(self) -> str:
        return f"MeteredBudget({self.inner!r})"

    def __getattr__(self, name: str) -> Any:  # limit_requests, available_tokens, ... of the backend
        return getattr(self.inner, name)

    @property
    def limit_tokens(self) -> int:
        return self.inner.limit_tokens

    def reserve(self, tokens: int, *, timeout: float | None = None) -> Reservation:
        return self.inner.reserve(tokens, timeout=timeout)

    def reconcile(self, reservation: Reservation, actual_tokens: int, *args: Any, **kwargs: Any) -> None:
        self.inner.reconcile(reservation, actual_tokens, *args, **kwargs)  # headers=, where taken
        now = self._clock()
        with self._lock:
            self.attempts += 1
            if actual_tokens == 0:
                self.refused += 1
            else:
                self._settled.append((now, actual_tokens))
            self._forget_before(now - self._window_s)

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        self.inner.observe_headers(headers)

    def penalize(self, retry_after_s: float) -> None:
        self.inner.penalize(retry_after_s)

    def tokens_last_minute(self) -> int:
        """Tokens settled over the last `window_s` seconds (60: tokens per minute)."""
        now = self._clock()
        with self._lock:
            self._forget_before(now - self._window_s)
            return sum(tokens for _, tokens in self._settled)

    def _forget_before(self, cutoff: float) -> None:
        while self._settled and self._settled[0][0] < cutoff:
            self._settled.popleft()


def meter_teacher_budget(teacher: Any) -> MeteredBudget:
    """Put a `MeteredBudget` between `teacher` and its budget (once) and return it."""
    budget = teacher.budget
    if isinstance(budget, MeteredBudget):
        return budget
    metered = MeteredBudget(budget)
    teacher.budget = metered
    return metered


def unmeter_teacher_budget(teacher: Any) -> None:
    """Give `teacher` its own budget back."""
    if isinstance(teacher.budget, MeteredBudget):
        teacher.budget = teacher.budget.inner
