"""SparsityConfig and NeuronConfig go through lmbricks.config: one error format, unknown keys refused."""

from __future__ import annotations

import dataclasses

import pytest

from lmbricks.analysis import NeuronConfig, SparsityConfig
from lmbricks.errors import ConfigError


@pytest.mark.parametrize(
    ("cls", "fields", "message"),
    [
        (SparsityConfig, {"n_chunks": 0}, r"^n_chunks: Input should be greater than or equal to 1 \(got 0\)$"),
        (SparsityConfig, {"sparsities": (0.5, 1.5)}, r"^sparsities\[1\]: Input should be less than or equal to 1"),
        (SparsityConfig, {"metrics": ("nrm",)}, r"^metrics\[0\]: unknown metric 'nrm' \(did you mean 'norm'\?\)"),
        (SparsityConfig, {"domains": ()}, r"^domains: "),
        (SparsityConfig, {"cett_target": 1.0}, r"^cett_target: Input should be less than 1"),
        (SparsityConfig, {"n_chunk": 3}, r"^unknown key 'n_chunk' \(did you mean 'n_chunks'\?\)$"),
        (NeuronConfig, {"domains": ("code",)}, r"^domains: Tuple should have at least 2 items"),
        (NeuronConfig, {"domains": ("code", "code")}, r"^domains: duplicates"),
        (NeuronConfig, {"statistic": "corrr"}, r"^statistic: unknown statistic 'corrr' \(did you mean 'corr'\?\)"),
        (NeuronConfig, {"fraction": 0.0}, r"^fraction: Input should be greater than 0"),
    ],
)
def test_a_bad_field_is_one_config_error_naming_it(cls: type, fields: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cls(**fields)


def test_positional_fields_are_named_in_errors_and_the_config_is_a_dataclass() -> None:
    cfg = SparsityConfig(("code", "zh"), (0.0, 0.5), ("norm",), None, n_chunks=1, seq_len=8)
    assert dataclasses.asdict(cfg)["metrics"] == ("norm",) and cfg.cett_target is None
    with pytest.raises(ConfigError, match=r"^sparsities\[0\]: "):
        SparsityConfig(("code",), (-0.1,))
    with pytest.raises(ConfigError, match="takes 8 fields, got 9 positional values"):
        NeuronConfig(("a", "b"), 0.1, "corr", 1, 8, 1, 0, "fp32", 9)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_chunks = 2  # type: ignore[misc]
