"""``GET /metrics`` of the guard server: counters and latency histograms in the Prometheus text
exposition format (version 0.0.4), written by hand (it is small, and prometheus-client is not a
dependency).

Series (one process's: a server started with ``--workers N`` has N processes, each counting what
it answered; scrape each, or run one process per port behind the balancer):

* ``medrobust_guard_requests_total{route,status}``: requests answered, by route and HTTP status;
* ``medrobust_guard_images_total``: images answered by ``POST /v1/predict``;
* ``medrobust_guard_decisions_total{decision}``: answers by decision (accept, abstain, warn);
* ``medrobust_guard_flags_total{detector}``: images each detector flagged;
* ``medrobust_guard_query_watch_flags_total``: images answered while their client was flagged by
  the query-attack watch;
* ``medrobust_guard_step_seconds{step}``: a histogram per step of each request's guard work
  (``read``, ``detectors``, ``defense``, ``model``, ``total``: see :data:`medrobust.layer.guard_steps.STEPS`).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable

BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds of the latency buckets, seconds (a 32 px CNN takes about a millisecond, DenseNet121
at 224 px a few hundred on a CPU)."""

STEPS = ("read", "detectors", "defense", "model", "total")
"""The steps timed (the guard's :data:`~medrobust.layer.guard_steps.STEPS`; repeated here so that the web
side of the server needs no torch to render them)."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * len(BUCKETS_S)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(BUCKETS_S):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class GuardMetrics:
    """The server's counters (thread-safe); :meth:`render` writes them for Prometheus."""

    def __init__(self, detectors: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.images = 0
        self.decisions: Counter[str] = Counter({d: 0 for d in ("accept", "abstain", "warn")})
        self.flags: Counter[str] = Counter({d: 0 for d in detectors})
        self.watch_flags = 0
        self.steps = {step: _Histogram() for step in STEPS}

    def request(self, route: str, status: int) -> None:
        """Count one answered request."""
        with self._lock:
            self.requests[(route, int(status))] += 1

    def answers(self, answers: list[dict], timings: dict[str, float], watch_flags: int) -> None:
        """Count one prediction request's answers (``GuardAnswer.to_dict()`` each), its step times
        and the images the query watch flagged."""
        with self._lock:
            self.images += len(answers)
            for answer in answers:
                self.decisions[answer["decision"]] += 1
                for name, score in (answer.get("scores") or {}).items():
                    threshold = (answer.get("thresholds") or {}).get(name)
                    if score is not None and threshold is not None and score > threshold:
                        self.flags[name] += 1
            self.watch_flags += int(watch_flags)
            for step in STEPS:
                if step in timings:
                    self.steps[step].observe(float(timings[step]))

    def render(self) -> str:
        """Every series in the Prometheus text format."""
        with self._lock:
            lines = ["# HELP medrobust_guard_requests_total Requests answered, by route and HTTP status.",
                     "# TYPE medrobust_guard_requests_total counter"]
            lines += [f'medrobust_guard_requests_total{{route="{_label(route)}",status="{status}"}} {n}'
                      for (route, status), n in sorted(self.requests.items())]
            lines += ["# HELP medrobust_guard_images_total Images answered by POST /v1/predict.",
                      "# TYPE medrobust_guard_images_total counter", f"medrobust_guard_images_total {self.images}",
                      "# HELP medrobust_guard_decisions_total Answers by decision.",
                      "# TYPE medrobust_guard_decisions_total counter"]
            lines += [f'medrobust_guard_decisions_total{{decision="{_label(d)}"}} {n}'
                      for d, n in sorted(self.decisions.items())]
            lines += ["# HELP medrobust_guard_flags_total Images each detector flagged (score above its threshold).",
                      "# TYPE medrobust_guard_flags_total counter"]
            lines += [f'medrobust_guard_flags_total{{detector="{_label(d)}"}} {n}' for d, n in sorted(self.flags.items())]
            lines += ["# HELP medrobust_guard_query_watch_flags_total Images answered while the query-attack watch "
                      "flagged their client.", "# TYPE medrobust_guard_query_watch_flags_total counter",
                      f"medrobust_guard_query_watch_flags_total {self.watch_flags}",
                      "# HELP medrobust_guard_step_seconds Seconds of guard work per prediction request, by step.",
                      "# TYPE medrobust_guard_step_seconds histogram"]
            for step, h in self.steps.items():
                for bound, count in zip(BUCKETS_S, h.counts):
                    lines.append(f'medrobust_guard_step_seconds_bucket{{step="{step}",le="{bound:g}"}} {count}')
                lines.append(f'medrobust_guard_step_seconds_bucket{{step="{step}",le="+Inf"}} {h.n}')
                lines.append(f'medrobust_guard_step_seconds_sum{{step="{step}"}} {h.total:.6f}')
                lines.append(f'medrobust_guard_step_seconds_count{{step="{step}"}} {h.n}')
        return "\n".join(lines) + "\n"
