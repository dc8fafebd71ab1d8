"""Per-model time breakdown from Triton's statistics API (deltas between two snapshots).

``get_inference_statistics`` reports cumulative counts and nanoseconds per model:
``inference_stats.queue`` (waiting in the scheduler), ``compute_input`` / ``compute_infer`` /
``compute_output`` (the backend's execute, split by the backend), ``success``
(request end to end inside the server), plus ``inference_count`` (requests, or batch items)
and ``execution_count`` (backend executions: fewer than inferences means batching).
For a decoupled model (the decoder) a request's compute time ends when its execute returns,
not when its last response is sent: read those rows with care.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

STAGES = ("success", "queue", "compute_input", "compute_infer", "compute_output")
NS_PER_MS = 1e6


def snapshot(url: str) -> dict[str, dict[str, int]]:
    """Cumulative statistics of every model at ``url`` (gRPC): {model: {field: value}}."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    try:
        stats = client.get_inference_statistics(as_json=True)
    finally:
        client.close()
    return parse_statistics(stats)


def parse_statistics(stats: dict) -> dict[str, dict[str, int]]:
    """Flatten the JSON form of ``ModelStatisticsResponse`` (int64 fields arrive as strings)."""
    out: dict[str, dict[str, int]] = {}
    for model in stats.get("model_stats", []):
        row = {
            "inference_count": int(model.get("inference_count", 0)),
            "execution_count": int(model.get("execution_count", 0)),
        }
        inference = model.get("inference_stats", {})
        for stage in STAGES:
            entry = inference.get(stage, {})
            row[f"{stage}_count"] = int(entry.get("count", 0))
            row[f"{stage}_ns"] = int(entry.get("ns", 0))
        key = model["name"] if model.get("version") in (None, "", "1") else f"{model['name']}/{model['version']}"
        out[key] = row
    return out


@dataclass(frozen=True)
class ModelBreakdown:
    """One model's share of a run: counts and mean milliseconds per request (success count)."""

    model: str
    requests: int
    executions: int
    inferences: int
    queue_ms: float
    compute_input_ms: float
    compute_infer_ms: float
    compute_output_ms: float
    total_ms: float

    @property
    def batch(self) -> float:
        """Mean inferences per execution (> 1: requests were batched)."""
        return self.inferences / self.executions if self.executions else 0.0

    def as_dict(self) -> dict[str, object]:
        """JSON-ready fields, the mean batch included."""
        return {**asdict(self), "batch": self.batch}


def breakdown(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> list[ModelBreakdown]:
    """Per model with traffic between the two snapshots, the mean time per request in each stage."""
    rows = []
    for model, end in sorted(after.items()):
        start = before.get(model, {})

        def delta(key: str, end: dict[str, int] = end, start: dict[str, int] = start) -> int:
            return end.get(key, 0) - start.get(key, 0)

        requests = delta("success_count")
        if requests <= 0:
            continue

        def mean_ms(stage: str, requests: int = requests, delta=delta) -> float:
            return delta(f"{stage}_ns") / requests / NS_PER_MS

        rows.append(
            ModelBreakdown(
                model=model,
                requests=requests,
                executions=delta("execution_count"),
                inferences=delta("inference_count"),
                queue_ms=mean_ms("queue"),
                compute_input_ms=mean_ms("compute_input"),
                compute_infer_ms=mean_ms("compute_infer"),
                compute_output_ms=mean_ms("compute_output"),
                total_ms=mean_ms("success"),
            )
        )
    return rows
