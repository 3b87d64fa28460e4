"""The MoEfied router registry is the list of names: a registered kind converts, saves and loads with no other edit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typing_extensions import override

from lmbricks.errors import ConfigError
from lmbricks.moefy import load_moefied, make_config, moefied_layers, moefy_model, save_moefied
from lmbricks.moefy.routers import MOEFY_ROUTERS, CentroidRouter, RouterFit, register_moefy_router


class FlippedCentroidRouter(CentroidRouter):
    """Scores ``-x . c_e``: the experts least aligned with the input (a control, not a good router)."""

    @classmethod
    @override
    def fit(cls, data: RouterFit) -> FlippedCentroidRouter:
        return cls(-CentroidRouter.from_rows(data.rows, data.config.experts).centroids.detach())


@pytest.fixture()
def flipped() -> Iterator[str]:
    register_moefy_router("flipped_centroid", reference="tests")(FlippedCentroidRouter)
    try:
        yield "flipped_centroid"
    finally:
        MOEFY_ROUTERS.pop("flipped_centroid")


def test_unknown_router_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="did you mean 'centroid'") as err:
        make_config(router="centroids")
    assert all(name in str(err.value) for name in ("linear", "mlp"))


def test_registered_router_is_selectable_saved_and_loaded(
    tiny_model, tiny_llama: Path, tmp_path: Path, flipped: str
) -> None:
    model, tok = tiny_model
    cfg = make_config(experts=4, top_k=2, split="kmeans", router=flipped)
    info = moefy_model(model, tok, cfg)  # no calibration data: the kind says it needs none
    layers = moefied_layers(model)
    assert all(isinstance(m.router, FlippedCentroidRouter) and m.router.top_k == 2 for m in layers)
    ids = torch.randint(3, 384, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        routed = model(input_ids=ids).logits
    out = save_moefied(model, tmp_path / "moe", cfg, info.permutations, source=tiny_llama)
    loaded, _ = load_moefied(out)
    assert all(isinstance(m.router, FlippedCentroidRouter) for m in moefied_layers(loaded))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, routed, rtol=0, atol=1e-6)
