"""Refunds: giving back what a decision took when its request did not go ahead after all
(another rule of the same check refused it), for each algorithm as a pure state transition
beside its step in `algorithms.py` (the Redis backend runs the Lua twin, `lua/refund.lua`)."""

from __future__ import annotations

import math

from rate_limiter.algorithms import Algorithm, Decision, Limit, State, ceil_up


def refund(
    state: State,
    now: int,
    limit: Limit,
    cost: int,
    at: int,
    position: int = 0,
    shared: bool = False,
) -> tuple[State | None, tuple[int, int] | None]:
    """Give back `cost` units that a decision allowed at `at` took for a request that then
    did not go ahead (another rule of its check refused it). Only what the key still holds
    of them goes back, never more, so the limit's bound holds whatever came in between.
    The new state and, after it, the remaining and the µs until the key is full again (so a
    refund moves the reset back too), or (None, None) when nothing goes back.

    - gcra: the debt is repaid oldest first, and the tokens taken after these (`a -
      position` at most, `position` being the key's running total `a` just after the
      decision) sit above them: what of the debt lies below those is these units', up to
      `cost`. (Not "the cost less what was repaid since": on a busy key the units are near
      the top of the debt and nothing of them is repaid yet.) When they are the newest
      (`position == a`), `a` goes down with them, unless the position is `shared` (a
      prefetched batch's, which its other decisions hold too).
    - fixed_window: from the window's count, while that window lasts.
    - sliding_window: from the count of the window they were counted in, this one's or, once
      it has rolled over, the previous one's (which still weighs).
    - sliding_log: `cost` entries of the time `at`, while they are in the log (entries of one
      time are alike: which of them go is all the same).
    - concurrency: nothing here (a lease is given back by `release`)."""
    if not state or cost <= 0:
        return None, None
    algorithm, p = limit.algorithm, limit.period_us
    if algorithm is Algorithm.GCRA:
        a, created = int(state.get("a", 0)), int(state.get("c", 0))
        if created > at or not cost <= position <= a:  # (another life of the key, or no receipt)
            return None, None
        t_us = p / limit.rate
        d = max(0.0, float(state["d"]) - max(0, now - int(state["t"])) / t_us)
        back = min(cost, d - (a - position))
        if back <= 0:
            return None, None
        d -= back
        if position == a and not shared:  # the newest: as if never taken (see refund.lua)
            a -= math.floor(back + 1e-9)
        # (the subtraction leaves float noise: a billionth of a token is not a token less)
        remaining = math.floor(limit.capacity - d + 1e-9)
        return {**state, "d": d, "t": now, "a": a}, (max(0, remaining), ceil_up(d * t_us))
    window = now // p
    if algorithm is Algorithm.FIXED_WINDOW:
        if at // p != window or int(state["w"]) != window:
            return None, None
        count = max(0, int(state["c"]) - cost)
        reset = (window + 1) * p - now if count else 0
        return {"w": window, "c": count}, (max(0, limit.rate - count), reset)
    if algorithm is Algorithm.SLIDING_WINDOW:
        w, cur, prev = int(state["w"]), int(state["c"]), int(state["p"])
        if window > at // p + 1:
            return None, None  # (two windows on, they weigh nothing any more)
        if w == at // p:
            cur = max(0, cur - cost)
        elif w == at // p + 1:
            prev = max(0, prev - cost)
        else:
            return None, None
        into = now - window * p
        # (w == window - 1: the stored count is now the previous window's)
        est = prev * (p - into) / p + cur if w == window else cur * (p - into) / p
        now_cur, now_prev = (cur, prev) if w == window else (0, cur)
        reset = (window + 2) * p - now if now_cur else ((window + 1) * p - now if now_prev else 0)
        return {"w": w, "c": cur, "p": prev}, (max(0, math.floor(limit.rate - est)), reset)
    if algorithm is Algorithm.SLIDING_LOG:
        log = [t for t in state.get("log", []) if t > now - p]
        mine = [i for i, t in enumerate(log) if t == at][:cost]
        if not mine:
            return None, None
        gone = set(mine)
        log = [t for i, t in enumerate(log) if i not in gone]
        reset = log[-1] + p - now if log else 0
        return {"log": log}, (max(0, limit.rate - len(log)), reset)
    return None, None


def gives_back(limit: Limit, decision: Decision, cost: int) -> bool:
    """Whether a check that was refused (by another rule) refunds what this rule's decision
    took: it took something (allowed, a cost), and the limit does not count refused
    requests anyway. Concurrency leases are released instead."""
    return (
        decision.allowed
        and cost > 0
        and not limit.count_refused
        and limit.algorithm is not Algorithm.CONCURRENCY
    )
