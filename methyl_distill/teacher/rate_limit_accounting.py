"""How the endpoint counts a request against its tokens-per-minute limit, and finding it out.

Two accountings occur in the wild:

- `admission`: the request is charged at admission with the estimated prompt tokens plus
  `max_tokens`, and that charge stays in the 60-second window whatever the reply used. This is what
  OpenAI's rate-limit guide describes ("calculated from max_tokens and the estimated number of
  tokens in your request"). A client that gives back `max_tokens - used` when the reply arrives
  believes it has budget the server does not grant, and is answered 429.
- `settle`: the charge is settled to the reply's usage when the reply is sent (many proxies and
  self-hosted gateways, and the project's test server by default).

`RateLimitAccounting` holds the answer for one run. Configured as `admission` or `settle` it is
fixed. In `auto` it starts as `admission` (the safe side: nothing is given back) and reads the
`x-ratelimit-remaining-tokens` header of each reply. Between two replies the server's remaining
tokens change by the refill (limit/60 per second), minus what was admitted meanwhile, plus, if the
server settles, the part of this reply's reservation it did not use. So each reply whose unused part
is large enough to see gives a vote: `(remaining - predicted without a refund) / refund` near 0 says
admission, near 1 says settle. The client asks at `max_output_tokens` until the accounting is
decided (`teacher.request_pacing.ReplyBudget`), which keeps the unused part large and the votes
clear. After `min_votes` votes, three in four agreeing decide; a later clear majority may change it.

Noise only ever pushes votes towards `admission`: other processes sharing the key, and requests
reserved here but admitted there after the previous reply, make the remaining count lower than
predicted. A server without the headers leaves `auto` at `admission`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Literal

from methyl_distill.teacher.rate_limit_headers import RateLimitHeaders

logger = logging.getLogger(__name__)

Accounting = Literal["admission", "settle"]
AccountingSetting = Literal["auto", "admission", "settle"]

# A reply is a vote only when its unused reservation is at least this many tokens: smaller refunds
# drown in the noise of the prompt estimates of the requests admitted between two replies (a few
# hundred tokens each). Not a share of the limit: at 1M TPM that would exclude every reply.
MIN_VISIBLE_REFUND_TOKENS = 500
# Replies further apart than this say little: much was admitted and refilled between them, and a
# refill that reached the limit hides what happened.
MAX_VOTE_GAP_S = 30.0


class RateLimitAccounting:
    """The run's answer to "does the endpoint give back unused max_tokens?"; thread-safe."""

    def __init__(self, setting: AccountingSetting = "auto", *, min_votes: int = 8, window: int = 32) -> None:
        self.setting: AccountingSetting = setting
        self._mode: Accounting = "settle" if setting == "settle" else "admission"
        self._decided = setting != "auto"
        self._min_votes = min_votes
        self._votes: deque[bool] = deque(maxlen=window)  # True: the reply looked settled
        self._lock = threading.Lock()
        self._previous: tuple[float, int] | None = None  # (when, remaining tokens) of the last header
        self._admitted_since = 0  # tokens reserved here since that header
        self._replies_with_headers = 0
        self._replies = 0

    def __repr__(self) -> str:
        return f"RateLimitAccounting(setting={self.setting!r}, mode={self.mode!r}, decided={self.decided})"

    @property
    def mode(self) -> Accounting:
        return self._mode

    @property
    def decided(self) -> bool:
        """Configured, or found out from the headers."""
        return self._decided

    @property
    def keeps_admission_charge(self) -> bool:
        """Whether a request's admission charge stays in the window (nothing is given back)."""
        return self._mode == "admission"

    @property
    def headers_seen(self) -> bool:
        return self._replies_with_headers > 0

    @property
    def replies(self) -> int:
        return self._replies

    def votes(self) -> tuple[int, int]:
        """(votes for settle, votes in the window)."""
        with self._lock:
            return sum(self._votes), len(self._votes)

    def describe(self) -> str:
        settled, total = self.votes()
        if self.setting != "auto":
            return f"{self._mode} (configured)"
        if not self._decided:
            return f"{self._mode} (assumed: {total} of {self._min_votes} readings so far)"
        return f"{self._mode} (from the x-ratelimit headers: {settled} of {total} readings settled)"

    def reserved(self, tokens: int) -> None:
        """Tokens were reserved for a request about to be sent."""
        with self._lock:
            self._admitted_since += tokens

    def refused(self, tokens: int) -> None:
        """A request was refused before admission (a 429): it was never charged."""
        with self._lock:
            self._admitted_since -= tokens

    def answered(self, now: float, reserved_tokens: int, used_tokens: int, headers: RateLimitHeaders) -> None:
        """A reply arrived: `reserved_tokens` had been reserved for it, `used_tokens` is its usage."""
        with self._lock:
            self._replies += 1
            remaining, limit = headers.remaining_tokens, headers.limit_tokens
            if remaining is None or limit is None or limit <= 0:
                return
            self._replies_with_headers += 1
            previous, admitted = self._previous, self._admitted_since
            self._previous, self._admitted_since = (now, remaining), 0
            if self.setting != "auto" or previous is None:
                return
            gap = now - previous[0]
            refund = reserved_tokens - used_tokens
            if gap < 0 or gap > MAX_VOTE_GAP_S or refund < MIN_VISIBLE_REFUND_TOKENS:
                return
            refilled = previous[1] + limit / 60.0 * gap
            if refilled + refund >= limit:
                return  # near a full bucket the refill or a refund is capped at the limit: no reading
            predicted = refilled - admitted
            self._votes.append((remaining - predicted) / refund > 0.5)
            self._decide()

    def _decide(self) -> None:
        if len(self._votes) < self._min_votes:
            return
        share = sum(self._votes) / len(self._votes)
        found: Accounting | None = "settle" if share >= 0.75 else "admission" if share <= 0.25 else None
        if found is None:
            return
        if found != self._mode or not self._decided:
            logger.info(
                "the endpoint %s (%d of %d x-ratelimit readings)",
                "gives back unused max_tokens when it replies"
                if found == "settle"
                else "keeps each request's admission charge (prompt + max_tokens) for the minute",
                sum(self._votes) if found == "settle" else len(self._votes) - sum(self._votes),
                len(self._votes),
            )
        self._mode, self._decided = found, True
