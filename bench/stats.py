"""Percentiles and the summary every bench prints (nearest-rank on the sorted samples)."""


def percentile(values, p):
    """The ``p``-th percentile (0-100) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100.0 * (len(ordered) - 1))))]


def summary(seconds, digits=2):
    """{"runs", "p50_ms", "p99_ms", "max_ms"} of samples given in seconds."""
    ms = [1000.0 * v for v in seconds]
    return {"runs": len(ms), "p50_ms": round(percentile(ms, 50), digits),
            "p99_ms": round(percentile(ms, 99), digits), "max_ms": round(max(ms), digits)}
