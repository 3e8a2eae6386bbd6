"""The OCI layout of a zoo model: CNCF ModelPack v1 media types, the config blob and the annotations.

Pure functions from a zoo manifest (files + card) to the OCI image manifest and its config blob, both
serialised canonically so identical content always gives identical digests (docs/registry.md, "Layout").
"""

from __future__ import annotations

from .base import FileEntry, manifest_bytes

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"  # ModelPack v1 artifactType
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"  # tokenizer.json, config.json, ...
DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"  # the card, zoo.yaml
TITLE = "org.opencontainers.image.title"
FILEPATH = "org.cncf.model.filepath"
CARD_FILE = "zoo.yaml"


def _param_size(count: int | None) -> str | None:
    """ModelPack paramSize: '<count><K|M|B|T>' with at most one decimal, e.g. 6.7B."""
    if not isinstance(count, int) or count <= 0:
        return None
    for scale, letter in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + letter
    return f"{count / 1000:.1f}K"


def _card_facts(card: dict) -> dict[str, str]:
    """format, architecture, parameters, precision, quantization, sparsity from a card (absent ones left out)."""
    comp = card.get("compression") if isinstance(card.get("compression"), dict) else {}
    bits = comp.get("bits")
    precision = f"int{bits}" if bits in (4, 8) else {16: "fp16", 32: "fp32"}.get(bits)
    quant = "-".join(str(p) for p in (precision, comp.get("group_size") and f"g{comp['group_size']}",
                                      comp.get("quantizer")) if p) if bits in (4, 8) else None
    facts = {"format": "safetensors", "architecture": card.get("architecture"), "parameters": card.get("parameters"),
             "precision": precision, "quantization": quant, "sparsity": comp.get("sparsity")}
    return {k: str(v) for k, v in facts.items() if v is not None}


def modelpack_config(manifest: dict, entries: list[FileEntry]) -> bytes:
    """The config blob: a ModelPack model config (descriptor, config, modelfs) plus the zoo manifest under 'zoo'."""
    card, facts = manifest["card"], _card_facts(manifest["card"])
    descriptor = {"name": manifest["name"], "version": manifest["tag"], "family": card.get("architecture"),
                  "description": card.get("description"), "licenses": [card["license"]] if card.get("license") else None}
    config = {"architecture": "transformer", "format": "safetensors", "paramSize": _param_size(card.get("parameters")),
              "precision": facts.get("precision"), "quantization": facts.get("quantization")}
    doc = {"descriptor": {k: v for k, v in descriptor.items() if v},
           "config": {k: v for k, v in config.items() if v},
           "modelfs": {"type": "layers", "diff_ids": [f"sha256:{e.sha256}" for e in entries]},
           "zoo": manifest}
    return manifest_bytes(doc)


def _layer_type(path: str) -> str:
    if path.endswith(".safetensors"):
        return WEIGHT_RAW
    return DOC_RAW if path == CARD_FILE else WEIGHT_CONFIG_RAW


def oci_manifest(manifest: dict, entries: list[FileEntry], config_digest: str, config_size: int) -> dict:
    """The OCI image manifest: ModelPack artifactType, one raw layer per file, annotations from the card."""
    facts = _card_facts(manifest["card"])
    annotations = {"org.opencontainers.image.title": manifest["name"],
                   "org.opencontainers.image.version": manifest["tag"],
                   "org.opencontainers.image.description": manifest["card"].get("description"),
                   "org.opencontainers.image.licenses": manifest["card"].get("license"),
                   **{f"org.cncf.model.{key}": value for key, value in facts.items()}}
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": MODEL_ARTIFACT,
            "config": {"mediaType": MODEL_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": _layer_type(e.path), "digest": f"sha256:{e.sha256}", "size": e.size,
                        "annotations": {TITLE: e.path, FILEPATH: e.path}} for e in entries],
            "annotations": {k: v for k, v in annotations.items() if v}}
