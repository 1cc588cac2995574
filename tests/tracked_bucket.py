"""A token bucket that keeps every reservation it hands out, so a test can see that each was settled."""

from __future__ import annotations

import threading

from methyl_distill.teacher.token_bucket import LocalTokenBucket, Reservation


class TrackedBucket(LocalTokenBucket):
    """The in-process bucket, keeping every reservation it hands out."""

    def __init__(self, tokens_per_minute: int) -> None:
        super().__init__(tokens_per_minute)
        self.reservations: list[Reservation] = []
        self._kept = threading.Lock()

    def reserve(self, tokens: int, *, timeout: float | None = None) -> Reservation:
        reservation = super().reserve(tokens, timeout=timeout)
        with self._kept:
            self.reservations.append(reservation)
        return reservation

    def unsettled(self) -> list[Reservation]:
        with self._kept:
            return [reservation for reservation in self.reservations if not reservation.settled]
