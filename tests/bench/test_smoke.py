"""The benchmark scripts still run end to end (tiny model, one or two steps); no timing is asserted."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import lorazoo  # noqa: E402
from benchmarks import common, inference, reconstruct, train_step  # noqa: E402
from benchmarks.report import write_report  # noqa: E402
from lorazoo.train.loading.tiny import TINY_CONFIGS  # noqa: E402


def written(path: Path, benchmark: str) -> dict:
    """A results file, checked for the head cli.publish gives every benchmark's file."""
    data = json.loads(path.read_text())
    assert data["benchmark"] == benchmark and data["command"].startswith("python -m benchmarks.")
    assert {"cpu", "torch", "transformers", "peft", "lorazoo", "load_average"} <= set(data["machine"])
    return data


def test_tiny_model_is_the_package_tiny_llama():
    """The smoke model comes from the one tiny-model table (lorazoo.train.loading.tiny), not a copy."""
    base = common.build_base("tiny")
    for key, value in TINY_CONFIGS["llama"].items():
        assert getattr(base.config, key) == value, key
    assert base.config.vocab_size == common.MODELS["tiny"]["vocab_size"]


def test_settings_cover_every_registered_projection():
    shapes = common.Shapes(common.llama2_7b_shapes())
    covered = {s.projection for s in common.settings_for(shapes)}
    assert covered == set(lorazoo.projection_names())
    assert shapes.D(4) == 9_994_240  # Llama-2-7B all-linear r = 4: r · Σ(in + out) over its config
    assert shapes.vector_length() == 256 and common.Shapes([("x", 576, 192)]).vector_length() == 64


def test_implementations_pair_each_projection_with_peft():
    shapes = common.Shapes([("q_proj", 576, 576), ("v_proj", 576, 192)])
    impls, baseline_of, twin_of = common.implementations(common.settings_for(shapes, ["lora", "vera", "tied"]))
    keys = {i.key for i in impls}
    assert {"lorazoo/lora", "peft/lora", "lorazoo/vera", "peft/vera", "peft/lora-r256", "lorazoo/tied"} <= keys
    assert twin_of == {"lorazoo/lora": "peft/lora", "lorazoo/vera": "peft/vera"}
    assert baseline_of["lorazoo/vera"] == "peft/lora-r256" and baseline_of["lorazoo/tied"] == "peft/lora"


def test_train_step_runs(tmp_path):
    argv = "--model tiny --only lora,unilora --steps 2 --warmup 1 --batch 1 --seq 8"
    payload = train_step.main([*argv.split(), "--out", str(tmp_path), "--report", str(tmp_path / "b.md")])
    records = {r["implementation"]: r for r in payload["records"]}
    assert set(records) == {"base", "lorazoo/lora", "peft/lora", "lorazoo/unilora", "peft/unilora", "peft/lora-r4"}
    ours = records["lorazoo/unilora"]
    assert ours["status"] == "ok" and ours["step_n"] == 2 and ours["trainable"] == ours["trainable"] > 0
    assert ours["ratio_vs_peft_same_method"] > 0 and ours["peak_extra_mib"] > 0 and ours["adapter_bytes"] > 0
    assert records["peft/lora"]["ratio_vs_peft_lora_same_rank"] == 1.0
    assert records["base"]["trainable"] == 0 and records["base"]["step_n"] == 2
    assert set(ours["settings"]) == {"main", "small", "decode"}
    assert [st["seq"] for st in payload["token_settings"]] == [8, 16, 1]
    for name in ("main", "small", "decode"):
        entry = ours["settings"][name]
        assert entry["reference"] == "peft/unilora" and entry["overhead_ms"]["n"] == entry["n"]
        assert {"median", "lo", "hi", "resolved"} <= set(entry["minus_reference_ms"]) and "overhead_ratio" in entry
    assert "overhead_ms" not in records["base"]["settings"]["main"]
    # a partial run (--only) writes its own file, headed like every benchmark's
    assert written(tmp_path / "train_step--only-lora+unilora.json", "train_step")["records"]
    assert not (tmp_path / "train_step.json").exists()
    text = (tmp_path / "b.md").read_text()
    assert "Adapter overhead" in text and "`base`" in text


def test_train_step_drops_an_implementation_over_the_cap(tmp_path):
    args = train_step.parse_args(
        [
            "--model",
            "tiny",
            "--only",
            "lora",
            "--steps",
            "1",
            "--warmup",
            "1",
            "--step-cap",
            "1e-6",
            "--out",
            str(tmp_path),
        ]
    )
    base = common.build_base("tiny")
    impls, _, _ = train_step.plan(args, base)
    runners = {i.key: train_step.Runner(i, base, 1e-4, 0) for i in impls}
    train_step.run_timing(args, runners, train_step.token_settings(args)[0], 256)
    assert all("dropped" in r.status and r.times["main"] == [None] for r in runners.values())


def test_implementation_over_budget_gets_two_timed_rounds(tmp_path):
    args = train_step.parse_args(
        ["--model", "tiny", "--only", "lora", "--steps", "5", "--warmup", "2", "--budget", "0", "--out", str(tmp_path)]
    )
    base = common.build_base("tiny")
    runners = {"base": train_step.Runner(None, base, 1e-4, 0)}
    train_step.run_timing(args, runners, train_step.token_settings(args)[1], 256)
    times = runners["base"].times["small"]
    assert len(times) == args.small_steps == 10 and sum(t is not None for t in times) == train_step.MIN_TIMED


def test_inference_runs(tmp_path):
    argv = "--model tiny --only lora,vblora --repeats 2 --warmup 0 --seq 8 --prompt 4 --new-tokens 3"
    payload = inference.main([*argv.split(), "--out", str(tmp_path)])
    records = {r["implementation"]: r for r in payload["records"]}
    assert {
        "base",
        "lorazoo/lora merged",
        "lorazoo/lora unmerged",
        "lorazoo/vblora unmerged",
        "peft/lora unmerged",
    } <= set(records)
    assert records["lorazoo/lora merged"]["generate_tokens_per_s"] > 0
    diff = float(records["lorazoo/lora merged"]["check"].split("= ")[1].split()[0])
    assert diff < 1e-4  # the merged model computes what the unmerged one does
    assert written(tmp_path / "inference--only-lora+vblora.json", "inference")["records"]


def test_reconstruct_runs(tmp_path):
    payload = reconstruct.main(
        ["--blocks", "1", "--only", "lora,unilora,vblora", "--repeats", "1", "--warmup", "0", "--out", str(tmp_path)]
    )
    assert payload["D"] == 9_994_240 // 32
    assert {r["implementation"] for r in payload["records"]} == {"lorazoo/lora", "lorazoo/unilora", "lorazoo/vblora"}
    assert all(r["status"] == "ok" and r["forward_n"] == 1 for r in payload["records"])
    assert written(tmp_path / "reconstruct--only-lora+unilora+vblora.json", "reconstruct")  # partial: its own file
    write_report(tmp_path, tmp_path / "b.md", files={"reconstruct": "reconstruct--only-lora+unilora+vblora"})
    assert "Llama-2-7B" in (tmp_path / "b.md").read_text()


def test_time_limit_interrupts_python_loops():
    with pytest.raises(common.TimeLimitExceeded):
        with common.time_limit(0.05):
            while True:
                pass


def test_serving_runs_and_mixed_rows_match_single_adapters(tmp_path):
    from benchmarks import serving

    argv = "--model tiny --layers 1 --adapters 3 --rows 1 --seq 8 --repeats 1 --warmup 0"
    payload = serving.main([*argv.split(), "--out", str(tmp_path)])
    records = {r["implementation"]: r for r in payload["records"]}
    assert {
        "lorazoo/lora mixed batch",
        "lorazoo/lora sequential",
        "peft/lora mixed batch",
        "lorazoo/mixed projections mixed batch",
    } <= set(records)
    assert all(r["max_abs_diff_vs_single"] <= 1e-5 for r in records.values())
    assert (
        written(tmp_path / "serving.json", "serving") and "mixed-adapter batch" in (tmp_path / "serving.md").read_text()
    )
    write_report(tmp_path, tmp_path / "report.md")
    assert "## Serving several adapters" in (tmp_path / "report.md").read_text()
