"""The few-shot pipeline refuses a bad job before it loads any model."""

from __future__ import annotations

import pytest

from lmbricks.errors import ConfigError
from lmbricks.eval.fewshot.pipeline import FewshotJob, run_fewshot


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"fmt": "xml"}, "--format must be plain or chat, got 'xml'"), ({"shots": [0, 99]}, "--shots must lie in 0..")],
)
def test_bad_jobs_fail_before_loading(fields: dict, message: str) -> None:
    job = FewshotJob.model_validate({"model": "/nonexistent/model", **fields})
    with pytest.raises(ConfigError, match=message):
        run_fewshot(job)
