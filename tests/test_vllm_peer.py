"""The vLLM peer's knobs: known ones are applied, unknown ones refused (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from perf.systems.base import SystemConfig
from perf.systems.vllm import DEFAULT_REQUEST_TIMEOUT_S, VllmSystem


def _system(tmp_path: Path, **options: str) -> VllmSystem:
    config = SystemConfig(tmp_path / "ckpt", "0.6b", "fp32", 8, tmp_path, dict(options))
    return VllmSystem(config)


def test_request_timeout_knob_sets_the_client_timeout(tmp_path: Path) -> None:
    assert _system(tmp_path).request_timeout_s == float(DEFAULT_REQUEST_TIMEOUT_S)
    system = _system(tmp_path, **{"request-timeout-s": "1800"})
    assert system.request_timeout_s == 1800.0
    assert system.describe()["request_timeout_s"] == 1800.0


@pytest.mark.parametrize("options", [{"request-timout-s": "1800"}, {"kv-cache-gib": "2"}])
def test_unknown_knob_is_refused(tmp_path: Path, options: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="unknown vLLM knob"):
        _system(tmp_path, **options)


def test_non_positive_request_timeout_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="request-timeout-s"):
        _system(tmp_path, **{"request-timeout-s": "0"})
