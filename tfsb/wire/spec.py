"""What a request names (TF Serving's `ModelSpec`): a model, at most one of version or label, a signature.
One definition for the server's core and for the clients, with both directions of the proto mapping."""

from __future__ import annotations

from dataclasses import dataclass

from tfsb.errors import InvalidArgumentError

DEFAULT_SIGNATURE = "serving_default"


@dataclass(frozen=True)
class Spec:
    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""  # "" = serving_default

    def __post_init__(self):
        if self.version is not None and self.label is not None:
            raise InvalidArgumentError(f"Both model version ({self.version}) and model version label "
                                       f"({self.label}) cannot be supplied.")

    @property
    def signature(self) -> str:
        return self.signature_name or DEFAULT_SIGNATURE


def spec_from_proto(ms) -> Spec:
    """ModelSpec proto → Spec (both transports and warmup use it)."""
    choice = ms.WhichOneof("version_choice")
    return Spec(ms.name, ms.version.value if choice == "version" else None,
                ms.version_label if choice == "version_label" else None, ms.signature_name)


def fill_proto(ms, spec: Spec) -> None:
    """Spec → a request's ModelSpec proto (the clients)."""
    ms.name = spec.name
    ms.signature_name = spec.signature_name
    if spec.version is not None:
        ms.version.value = spec.version
    elif spec.label is not None:
        ms.version_label = spec.label
