"""Configs that parse but make no sense, NaN norms and hostile chat templates are refused in one line before
a kernel runs (issue 18): SPEC.md section 5's ranges, format/architectures.py, zoo/runtime/tokenizer.py."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.errors import ChatTemplateLimitError, FormatError, RuntimeModelError
from zoo.format import open_artifact
from zoo.format.architectures import check_config
from zoo.runtime.tokenizer import TEMPLATE_MAX_RANGE, TEMPLATE_SECONDS, Tokenizer
from zoo.synthetic import TINY_LLAMA, TINY_MPT

_spec = importlib.util.spec_from_file_location("zoo_tests_tiny", Path(__file__).with_name("tiny.py"))
tiny = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tiny)
TEMPLATE, tokenizer_json, write_tiny = tiny.TEMPLATE, tiny.tokenizer_json, tiny.write_tiny

LLAMA3 = {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_seq_len": 8192}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return write_tiny(tmp_path_factory.mktemp("hostile") / "tiny")


@pytest.fixture
def model(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "tiny"))


def edit_shards(artifact: Path, edit) -> None:
    """Apply edit(zoo_metadata, header) to every shard's header (data untouched); the card stops listing
    sizes and digests, so the edited files reach the reader (the CLI runs with --no-verify)."""
    for shard in sorted(artifact.glob("*.safetensors")):
        raw = shard.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        meta = json.loads(header["__metadata__"]["zoo"])
        edit(meta, header)
        header["__metadata__"]["zoo"] = json.dumps(meta)
        text = json.dumps(header).encode()
        text += b" " * (-(8 + len(text)) % 8)
        shard.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    card = yaml.safe_load((artifact / "zoo.yaml").read_text())
    card.pop("files", None)
    (artifact / "zoo.yaml").write_text(yaml.safe_dump(card))


def set_config(artifact: Path, **changes) -> None:
    def edit(meta, header):
        meta["config"].update(changes)
    edit_shards(artifact, edit)


def zoo(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "ZOO_DEBUG": ""}
    return subprocess.run([sys.executable, "-P", "-m", "zoo.cli.main", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)


def refused_in_one_line(proc: subprocess.CompletedProcess, words: str) -> None:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert words in lines[0], lines[0]


# --- the config's numeric ranges (check_config, before anything runs) ---

@pytest.mark.parametrize("changes, words", [
    ({"norm_eps": math.nan}, "'norm_eps' must be a finite number"),
    ({"norm_eps": -1e-5}, "'norm_eps' must be a finite number"),
    ({"norm_eps": 0.0}, "'norm_eps' must be a finite number"),
    ({"norm_eps": math.inf}, "'norm_eps' must be a finite number"),
    ({"rope_theta": 0.0}, "'rope_theta' must be a finite number"),
    ({"rope_theta": -10000.0}, "'rope_theta' must be a finite number"),
    ({"rope_scaling": {"type": "linear", "factor": 0.0}}, "'rope_scaling.factor' must be a finite number"),
    ({"rope_scaling": {"type": "linear"}}, "needs 'factor'"),
    ({"rope_scaling": {"type": "llama3"}}, "needs 'factor'"),
    ({"rope_scaling": {k: v for k, v in LLAMA3.items() if k != "original_max_seq_len"}}, "needs 'original_max_seq_len'"),
    ({"rope_scaling": {**LLAMA3, "high_freq_factor": 1.0}}, "low_freq_factor must be below high_freq_factor"),
    ({"rope_scaling": {**LLAMA3, "original_max_seq_len": 8192.5}}, "original_max_seq_len must be an integer"),
    ({"rope_scaling": {"type": "yarn", "factor": 2.0}}, "rope_scaling must be null or an object"),
    ({"tokenizer": {"chat_template": ["not", "a", "string"]}}, "tokenizer.chat_template must be str"),
    ({"tokenizer": {"chat_template": 42}}, "tokenizer.chat_template must be str"),
    ({"tokenizer": {"eos_token_ids": [-1]}}, "token ids must be non-negative"),
    ({"tokenizer": "chatml"}, "tokenizer must be null or an object"),
])
def test_llama_config_out_of_range_is_refused(changes, words):
    with pytest.raises(FormatError, match=words.replace("(", r"\(").replace(")", r"\)")):
        check_config({**TINY_LLAMA, **changes})


@pytest.mark.parametrize("changes", [{"norm_eps": math.nan}, {"alibi_bias_max": -8.0}, {"clip_qkv": math.inf},
                                     {"clip_qkv": 0}])
def test_mpt_config_out_of_range_is_refused(changes):
    with pytest.raises(FormatError, match="must be a finite number"):
        check_config({**TINY_MPT, **changes})


@pytest.mark.parametrize("changes", [{}, {"rope_scaling": LLAMA3}, {"rope_scaling": {"type": "linear", "factor": 2}},
                                     {"tokenizer": {"bos_token_id": 1, "eos_token_ids": [2], "add_bos": True,
                                                    "chat_template": TEMPLATE}}])
def test_sane_configs_pass(changes):
    check_config({**TINY_LLAMA, **changes})


@pytest.mark.parametrize("changes, words", [
    ({"norm_eps": -1.0}, "norm_eps"),
    ({"rope_scaling": {"type": "linear", "factor": 0}}, "rope_scaling.factor"),
    ({"rope_scaling": {"type": "llama3"}}, "needs 'factor'"),
])
def test_bad_config_is_refused_by_the_cli(model, changes, words):
    set_config(model, **changes)
    refused_in_one_line(zoo("run", model, "hello", "-n", "2", "--temperature", "0", "--no-verify"), words)
    refused_in_one_line(zoo("inspect", model, "--no-verify"), words)


def test_non_string_chat_template_is_refused_by_run(model):
    def edit(meta, header):
        meta["config"]["tokenizer"]["chat_template"] = {"not": "a string"}
    edit_shards(model, edit)
    refused_in_one_line(zoo("run", model, "hello", "-n", "2", "--no-verify"), "chat_template must be str")


def test_nan_norm_weights_are_refused_at_validation(model):
    """A NaN in a norm vector would turn every logit to NaN; validation refuses it before a kernel runs."""
    shard = next(p for p in sorted(model.glob("shared-*.safetensors")))
    raw = bytearray(shard.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    entry = json.loads(raw[8:8 + n])["blk.1.ffn_norm.weight"]
    assert entry["dtype"] == "F16"
    at = 8 + n + entry["data_offsets"][0] + 2 * 3
    raw[at:at + 2] = np.array([np.nan], "<f2").tobytes()
    shard.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="blk.1.ffn_norm.weight: norm weights not finite"):
        open_artifact(model).validate()
    refused_in_one_line(zoo("inspect", model, "--no-verify"), "norm weights not finite")
    refused_in_one_line(zoo("run", model, "hello", "-n", "2", "--temperature", "0", "--no-verify"),
                        "norm weights not finite")


# --- chat templates: time, output size, range ---

NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
NESTED_OUTPUT = "{% for i in range(100000) %}{% for j in range(100000) %}{{ j }}{% endfor %}{% endfor %}"
STRING_LOOPS = "{% set s = 'a' * 1000000 %}{% for x in s %}{% for y in s %}{% endfor %}{% endfor %}"


def render(template: str) -> str:
    return Tokenizer(tokenizer_json(), {"chat_template": template}).render_chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("template", [NESTED_LOOPS, NESTED_OUTPUT, STRING_LOOPS])
def test_endless_template_is_stopped_by_the_clock(template):
    start = time.monotonic()
    with pytest.raises(ChatTemplateLimitError, match=f"ran longer than {TEMPLATE_SECONDS:g} s"):
        render(template)
    assert time.monotonic() - start < TEMPLATE_SECONDS + 3


@pytest.mark.parametrize("template, words", [
    ("{{ 'a' * 20000000000 }}", "builds 20000000000 items"),
    ("{{ 20000000000 * 'a' }}", "builds 20000000000 items"),
    ("{{ ['a'] * 20000000000 }}", "builds 20000000000 items"),
    ("{{ 10 ** (10 ** 12) }}", "more than the limit"),
    ("{{ '%99999999999s' % 'a' }}", "width beyond the limit"),
    ("{{ '{:>99999999999}'.format('a') }}", "width beyond the limit"),
    ("{{ 'a' | center(99999999999) }}", "builds 99999999999 items"),
    ("{{ 'x' | indent(99999999999) }}", "builds 99999999999 items"),
    ("{{ '%99999999999s' | format('a') }}", "width beyond the limit"),
    ("{{ '%.99999999999f' % 1.5 }}", "width beyond the limit"),
    ("{{ '%*s' % (99999999999, 'a') }}", "width beyond the limit"),
    ("{{ '{:{w}}'.format('a', w=99999999999) }}", "width beyond the limit"),
    ("{{ ('a' * 1000000) | replace('a', 'a' * 1000) }}", "builds 1000000000 items"),
    ("{% for i in range(10 ** 9) %}{% endfor %}", f"more than the limit of {TEMPLATE_MAX_RANGE}"),
    ("{% for i in range(100000) %}{{ 'a' * 1000 }}{% endfor %}", "more than the limit"),  # 10**8 chars of output
])
def test_template_allocation_is_refused_before_it_happens(template, words):
    start = time.monotonic()
    with pytest.raises(ChatTemplateLimitError, match=words):
        render(template)
    assert time.monotonic() - start < TEMPLATE_SECONDS + 1


def test_ordinary_templates_still_render():
    assert render(TEMPLATE) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert render("{{ '%5s|' % 'a' }}{{ '{:>3}'.format(7) }}{{ 'ab' * 2 }}{{ 2 ** 10 }}{{ 'x'|center(5) }}") == \
        "    a|  7abab1024  x  "
    assert render("{% for i in range(3) %}{{ i }}{% endfor %}{{ 'aXa'|replace('X', 'yy') }}") == "012ayya"
    assert render("{{ 'on 20261206: %s' % 'a' }}{{ '{} 20261206'.format(1) }}") == "on 20261206: a1 20261206"


def test_a_failing_template_is_one_runtime_error():
    with pytest.raises(RuntimeModelError, match="chat template failed"):
        render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
    with pytest.raises(RuntimeModelError, match="bad role"):
        render("{{ raise_exception('bad role') }}")


@pytest.mark.parametrize("template, words", [(NESTED_LOOPS, "ran longer than"),
                                             ("{{ 'a' * 20000000000 }}", "builds 20000000000 items")])
def test_hostile_template_is_refused_by_run_in_one_line(model, template, words):
    def edit(meta, header):
        meta["config"]["tokenizer"]["chat_template"] = template
    edit_shards(model, edit)
    start = time.monotonic()
    refused_in_one_line(zoo("run", model, "hello", "-n", "2", "--no-verify"), words)
    assert time.monotonic() - start < 60  # start-up and model load included; the template stops in 2 s
