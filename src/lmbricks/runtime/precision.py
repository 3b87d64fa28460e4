"""Does a device multiply bf16 matrices natively, and what ``precision: auto`` means on it.

The rule (issue #15): ``auto`` is bf16 autocast with fp32 master weights and optimizer state where
the device has native bf16 matrix support, fp32 elsewhere; ``bf16`` and ``fp32`` are taken as
asked. Native means: a CUDA device of compute capability 8.0 or newer (Ampere, Hopper, ...) or a
ROCm device, an x86 CPU with AMX-BF16 or AVX512-BF16 (oneDNN's bf16 kernels), or an Arm CPU with the
BF16 extension (``BFMMLA``). Without it, bf16 is emulated and slower than fp32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Precision = Literal["bf16", "fp32"]
RequestedPrecision = Literal["auto", "bf16", "fp32"]
#: /proc/cpuinfo flags that mean native bf16 matrix arithmetic: x86 AMX and AVX-512 BF16, Arm BF16.
CPU_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16", "bf16"})
_CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor listed in ``/proc/cpuinfo`` text.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo``; x86 lists them on a ``flags`` line, Arm on a
            ``Features`` line.

    Returns:
        The flags, lower case (empty when no such line is found).
    """
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    return frozenset()


def cpu_native_bf16(flags: frozenset[str]) -> bool:
    """True when a CPU with these flags multiplies bf16 matrices natively.

    Args:
        flags: as :func:`cpu_flags` returns them.

    Returns:
        Whether any of ``amx_bf16``, ``avx512_bf16`` (x86) or ``bf16`` (Arm) is present.
    """
    return bool(flags & CPU_BF16_FLAGS)


@cache  # read once per process: the training loop asks every step
def _this_cpu_flags() -> frozenset[str]:
    if _CPUINFO.exists():
        return cpu_flags(_CPUINFO.read_text())
    import torch  # no /proc (macOS, Windows): ask torch's own CPU probes

    probes = {"amx_bf16": "_is_amx_tile_supported", "avx512_bf16": "_is_avx512_bf16_supported"}
    return frozenset(flag for flag, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)())


def native_bf16(device: torch.device | str) -> bool:
    """Does ``device`` have native bf16 matrix support?

    Args:
        device: a torch device or its name (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).

    Returns:
        True for CUDA devices of compute capability >= 8.0 and ROCm devices, CPUs with AMX-BF16,
        AVX512-BF16 or Arm BF16; False elsewhere (MPS and other backends included).
    """
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return False
        if torch.version.hip:
            return bool(torch.cuda.is_bf16_supported())
        return torch.cuda.get_device_capability(dev) >= (8, 0)
    if dev.type == "cpu":
        return cpu_native_bf16(_this_cpu_flags())
    return False


def resolve_precision(requested: RequestedPrecision | str, device: torch.device | str) -> Precision:
    """The precision a run uses: ``auto`` becomes bf16 where the device has it natively, else fp32.

    Args:
        requested: ``"auto"``, ``"bf16"`` or ``"fp32"``.
        device: where the run computes.

    Returns:
        ``"bf16"`` (autocast with fp32 master weights for training, bf16 weights for inference) or
        ``"fp32"``.

    Raises:
        ValueError: ``requested`` is none of the three.
    """
    if requested in ("bf16", "fp32"):
        return "bf16" if requested == "bf16" else "fp32"
    if requested != "auto":
        raise ValueError(f"precision must be auto, bf16 or fp32, not {requested!r}")
    return "bf16" if native_bf16(device) else "fp32"


def autocast(precision: Precision, device: torch.device | str) -> AbstractContextManager[object]:
    """The context a forward pass runs in: bf16 autocast for ``"bf16"``, nothing for ``"fp32"``.

    Args:
        precision: as :func:`resolve_precision` returns it.
        device: the device whose autocast is entered (its type picks CPU or CUDA autocast).

    Returns:
        ``torch.autocast(device_type, dtype=torch.bfloat16)`` or a ``nullcontext``.
    """
    import torch

    if precision == "fp32":
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def inference_dtype(precision: Precision) -> torch.dtype:
    """The weight dtype of an inference-only pass (eval, capture, calibration, trace, decoding).

    bf16 weights rather than autocast: on the default model they are the faster of the two and move
    the per-domain bits per byte by at most 0.08% against fp32 (docs/performance.md, "Precision").

    Args:
        precision: as :func:`resolve_precision` returns it.

    Returns:
        ``torch.bfloat16`` for ``"bf16"``, ``torch.float32`` for ``"fp32"``.
    """
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float32
