"""Registry documents from strangers are parsed within the readers' limits (issue 18): a static mirror's
index.json and an OCI registry's config blob and card layer, deeply nested, with duplicate keys or an alias
bomb, give one RegistryError line instead of RecursionError, a hang or exhausted memory."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from zoo.errors import RegistryError
from zoo.registry.http import HttpRegistry
from zoo.registry.oci import OciRegistry
from zoo.registry.oci_layout import MODEL_CONFIG

from .oci_server import OciRegistryServer
from .servers import Nginx

DEEP_JSON = "[" * 100_000 + "]" * 100_000  # json.loads: RecursionError
DEEP_YAML = "a: " + "[" * 20_000 + "]" * 20_000 + "\n"  # yaml's composer: RecursionError
BILLION_LAUGHS = "\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                           + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]) + "\n"


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    server = Nginx(tmp_path_factory.mktemp("mirror"), tmp_path_factory.mktemp("nginx"))
    yield server
    server.stop()


@pytest.mark.parametrize("index, message", [
    (f'{{"index_version": 1, "models": {DEEP_JSON}}}', "JSON nested deeper than"),
    ('{"index_version": 1, "models": [], "models": [{"name": "x", "tag": "y", "card": {}}]}',
     "duplicate JSON key 'models'"),
])
def test_mirror_index_is_parsed_within_limits(zoo_env, nginx, index, message):
    (nginx.root / "index.json").write_text(index)
    reg = HttpRegistry(nginx.url)
    try:
        with pytest.raises(RegistryError, match=message):
            reg.list_manifests()
    finally:
        reg.close()


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    server = OciRegistryServer(tmp_path_factory.mktemp("oci"))
    yield server
    server.stop()


def _oras_push(server: OciRegistryServer, repo: str, artifact: Path, card: str | None = None,
               config: str | None = None, tmp: Path | None = None) -> None:
    """Push the artifact's files with oras-py, the card replaced by `card`, a ModelPack config `config`."""
    import oras.provider

    work = Path(shutil.copytree(artifact, tmp / repo.replace("/", "-")))
    if card is not None:
        (work / "zoo.yaml").write_text(card)
    kwargs = {}
    if config is not None:
        (tmp / "config.json").write_text(config)
        kwargs["manifest_config"] = f"{tmp / 'config.json'}:{MODEL_CONFIG}"
    client = oras.provider.Registry(hostname=server.host, insecure=True)
    client.push(target=f"{server.host}/{repo}:v1", files=[str(p) for p in sorted(work.iterdir())],
                disable_path_validation=True, quiet=True, **kwargs)


@pytest.mark.parametrize("card, config, message", [
    (DEEP_YAML, None, "zoo.yaml layer: YAML nested deeper than"),
    (BILLION_LAUGHS, None, "zoo.yaml layer: YAML more than"),
    (None, f'{{"zoo": {DEEP_JSON}}}', "config: JSON nested deeper than"),
    (None, '{"zoo": {"manifest_version": 1}, "zoo": {}}', "config: duplicate JSON key 'zoo'"),
])
def test_oci_config_and_card_are_parsed_within_limits(zoo_env, registry, tiny_artifact, tmp_path, card, config,
                                                       message):
    repo = f"hostile/m{abs(hash((card, config))) % 10**8}"
    _oras_push(registry, repo, tiny_artifact, card=card, config=config, tmp=tmp_path)
    reg = OciRegistry(f"oci://{registry.host}/hostile")
    try:
        t0 = time.perf_counter()
        with pytest.raises(RegistryError, match=message):
            reg.get_manifest(repo.split("/", 1)[1], "v1")
        assert time.perf_counter() - t0 < 5
    finally:
        reg.close()
