"""perf/logit_screen_ab.py on the tiny model: it runs, pairs the steps and checks the tokens."""

from __future__ import annotations

import json

from perf.logit_screen_ab import main


def test_the_paired_screen_benchmark_reports_same_tokens_and_its_candidates(asr_export, tmp_path):
    main(["--sizes", "tiny", "--batch", "1", "2", "--steps", "4", "--output-dir", str(tmp_path)])
    report = json.loads((tmp_path / "results.json").read_text())
    levels = report["sizes"]["tiny"]
    assert [level["batch"] for level in levels] == [1, 2]
    for level in levels:
        assert level["same_tokens"] is True
        assert level["rows"] == 4 * level["batch"]  # the warm-up steps are not counted
        assert level["screen_ms"] > 0 and level["plain_ms"] > 0 and level["paired_speedup_median"] > 0
        assert 1 <= level["candidates_per_row"] < 1024
    text = (tmp_path / "report.md").read_text()
    assert "| tiny | 2 |" in text and "**no**" not in text
