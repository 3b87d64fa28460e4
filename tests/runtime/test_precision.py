"""lmbricks.runtime.precision: bf16 detection from cpuinfo text, and the rule of precision: auto."""

from __future__ import annotations

import pytest
import torch

from lmbricks.runtime import autocast, cpu_flags, cpu_native_bf16, native_bf16, resolve_precision

XEON_SPR = """\
processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz
flags\t\t: fpu vme sse sse2 avx avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile amx_int8

processor\t: 1
flags\t\t: fpu
"""
EPYC_ZEN4 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse avx avx2 avx512f avx512bw avx512_vnni\n"
GRAVITON3 = "processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: fp asimd sve bf16 i8mm\nCPU implementer\t: 0x41\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def test_cpu_flags_first_processor() -> None:
    flags = cpu_flags(XEON_SPR)
    assert {"amx_bf16", "avx512_bf16", "amx_tile"} <= flags and "fpu" in flags
    assert cpu_flags("") == frozenset()
    assert "bf16" in cpu_flags(GRAVITON3)


@pytest.mark.parametrize(
    ("text", "native"),
    [(XEON_SPR, True), (EPYC_ZEN4, True), (SKYLAKE, False), (GRAVITON3, True), (GRAVITON2, False), ("", False)],
)
def test_cpu_native_bf16(text: str, native: bool) -> None:
    assert cpu_native_bf16(cpu_flags(text)) is native


def test_resolve_precision_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbricks.runtime import precision

    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    monkeypatch.setattr(precision, "_this_cpu_flags", lambda: cpu_flags(XEON_SPR))
    assert resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "_this_cpu_flags", lambda: cpu_flags(SKYLAKE))
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", "meta") == "fp32"  # other backends: fp32
    with pytest.raises(ValueError, match="auto, bf16 or fp32"):
        resolve_precision("fp16", "cpu")


def test_native_bf16_cuda_without_cuda() -> None:
    if not torch.cuda.is_available():
        assert native_bf16("cuda") is False
    else:
        assert native_bf16("cuda") == (torch.cuda.get_device_capability() >= (8, 0))


def test_autocast_context() -> None:
    lin = torch.nn.Linear(8, 8)
    x = torch.randn(2, 8)
    with autocast("bf16", "cpu"):
        assert lin(x).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert lin(x).dtype == torch.float32
    assert lin.weight.dtype == torch.float32  # master weights stay fp32
