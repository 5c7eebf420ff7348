"""count_parameters: the papers' numbers, offline, on meta-device models; and the paper-count tables
(lorazoo.counting_tables: lorazoo-count, scripts/count_params.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from helpers import REPO_ROOT

from lorazoo import AdapterConfig, ConfigError, count_parameters, counting_tables, projection_names
from lorazoo.counting import meta_model, model_config_dirs

ALL = "all-linear"


def needs(name: str) -> None:
    if name not in projection_names():
        pytest.skip(f"projection {name!r} is not registered yet")


def test_roberta_base_lora_query_value_r8():
    counts = count_parameters(
        "roberta-base", AdapterConfig(projection="lora", rank=8, target_modules=["query", "value"])
    )
    # 12 layers × 2 modules × r (768 + 768)
    assert counts["trainable"] == counts["D"] == counts["stored"] == 294_912 == 12 * 2 * 8 * 1536
    assert counts["num_modules"] == 24 and counts["modules"] == ["query", "value"]


def test_roberta_base_vera_r1024():
    needs("vera")
    counts = count_parameters(
        "roberta-base", AdapterConfig(projection="vera", rank=1024, target_modules=["query", "value"])
    )
    assert counts["trainable"] == 43_008 == 24 * (1024 + 768)


@pytest.mark.parametrize("model, D", [("llama-2-7b", 9_994_240), ("gemma-7b", 12_500_992), ("mistral-7b", 10_485_760)])
def test_seven_b_all_linear_r4(model, D):
    start = time.perf_counter()
    counts = count_parameters(model, AdapterConfig(projection="lora", rank=4, target_modules=ALL))
    assert counts["D"] == counts["trainable"] == counts["stored"] == D
    assert counts["modules"] == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert time.perf_counter() - start < 30


def test_llama_lora_d_matches_the_closed_form():
    h, f, L, r = 4096, 11008, 32, 4
    expected = L * r * (4 * (h + h) + 2 * (h + f) + (f + h))
    counts = count_parameters("llama-2-7b", AdapterConfig(projection="lora", rank=r, target_modules=ALL))
    assert counts["trainable"] == counts["D"] == expected == 9_994_240
    assert counts["base"] == 6_738_415_616  # Llama-2-7B's published parameter count


def test_models_are_built_on_the_meta_device():
    model, name = meta_model("gemma-7b")
    assert name == "gemma-7b" and type(model).__name__ == "GemmaForCausalLM"
    assert all(p.is_meta for p in model.parameters()) and all(b.is_meta for b in model.buffers())
    model, _ = meta_model("roberta-base")
    assert type(model).__name__ == "RobertaForSequenceClassification" and all(p.is_meta for p in model.parameters())


def test_config_object_and_dict_give_the_same_counts():
    from transformers import RobertaConfig

    dims = dict(
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
    )
    cfg = AdapterConfig(projection="lora", rank=8, target_modules=["query", "value"], modules_to_save=["classifier"])
    by_name = count_parameters("roberta-base", cfg)
    by_config = count_parameters(RobertaConfig(architectures=["RobertaForSequenceClassification"], **dims), cfg)
    by_dict = count_parameters({"model_type": "roberta", "task_type": "seq_cls", **dims}, cfg)
    for counts in (by_config, by_dict):
        assert {k: counts[k] for k in ("trainable", "D", "stored", "modules_to_save", "base")} == {
            k: by_name[k] for k in ("trainable", "D", "stored", "modules_to_save", "base")
        }
    assert by_name["modules_to_save"] == 768 * 768 + 768 + 768 * 2 + 2  # RoBERTa's classification head


def test_unknown_model_and_bad_inputs_are_clear_errors():
    with pytest.raises(ConfigError, match=r"unknown model 'gpt-9'.*roberta-base"):
        count_parameters("gpt-9", AdapterConfig())
    with pytest.raises(ConfigError, match="model_type"):
        count_parameters({"hidden_size": 8}, AdapterConfig())
    with pytest.raises(ConfigError, match="task_type='seq2seq'"):
        meta_model("roberta-base", task_type="seq2seq")
    assert model_config_dirs()[0] == REPO_ROOT / "configs" / "model"


def test_script_writes_the_whole_table(tmp_path, capsys):
    out = tmp_path / "param_counts.md"
    assert counting_tables.main(["--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out
    row = next(line for line in text.splitlines() if "--model roberta-base --projection lora --rank 8" in line)
    assert "| 294,912 |" in row and "0.295M" in row
    assert "`python scripts/count_params.py --model llama-2-7b --projection lora --rank 4 --targets all-linear`" in text
    for D in ("9,994,240", "10,485,760", "12,500,992"):
        assert f"| {D} |" in text
    for name in projection_names():  # every registered projection has a row for this machine's models
        assert f"--model minilm --projection {name} " in text
    unregistered = {"vera", "tied", "vblora", "prolora"} - set(projection_names())
    assert all(f"`{name}` on" in text for name in unregistered)


def test_script_single_row_command(tmp_path):
    out = tmp_path / "one.md"
    cmd = [
        sys.executable,
        "scripts/count_params.py",
        "--model",
        "roberta-base",
        "--projection",
        "unilora",
        "--rank",
        "4",
        "--targets",
        "query,value",
        "--kwargs",
        "d=23040",
        "--out",
        str(out),
    ]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| roberta-base | unilora | 4 | d=23040 | 23,040 | 147,456 | 23,040 |" in out.read_text()


def test_script_rejects_an_unregistered_projection(capsys):
    assert counting_tables.main(["--model", "roberta-base", "--projection", "nope"]) == 2
    assert "not registered" in capsys.readouterr().err


def test_script_kwargs_round_trip_through_the_command_line():
    import shlex

    for kwargs in (
        {"d": 23040, "share": "global"},
        {"train": ["shared", "u"], "x": 0.5},
        {"num_vectors": 90, "topk": 2},
    ):
        command = counting_tables.Row("s", "roberta-base", "lora", 8, ["query"], kwargs).command()
        argv = shlex.split(command)[2:]
        assert counting_tables.parse_kwargs(argv[argv.index("--kwargs") + 1]) == kwargs


def newer_rows(section: str, model: str, projection: str, rank: int) -> list[counting_tables.Row]:
    """The table's paper rows with this section prefix, model, projection and rank."""
    needs(projection)
    return [
        row
        for row in counting_tables.paper_rows()
        if row.section.startswith(section) and (row.model, row.projection, row.rank) == (model, projection, rank)
    ]


# Each method's docstring count rebuilt from the model's dims (configs/model/<name>.yaml) and the authors'
# setting written out here, so a changed row (kwargs, targets, rank) or a changed projection count fails.
LLAMA_2_7B_ALL_LINEAR = 32 * 7  # 32 layers × q, k, v, o, gate, up, down
NEWER_METHOD_COUNTS = [
    # LoRA-XS: d = n_modules · r²; RoBERTa-large, 24 layers × (query, value, attention.output.dense, output.dense)
    pytest.param("LoRA-XS", "roberta-large", "loraxs", 25, {}, 24 * 4 * 25**2, id="loraxs"),
    # TinyLoRA: d = G · u, G = max(1, round(n · (1 − t))); PEFT's defaults u = 64, t = 0
    pytest.param(
        "TinyLoRA",
        "llama-2-7b",
        "tinylora",
        2,
        {"u": 64},
        max(1, round(LLAMA_2_7B_ALL_LINEAR * (1 - 0.0))) * 64,
        id="tinylora",
    ),
    # RandLoRA: d = Σ_l n_l (r + m_l), m_l = min(in, out) = 768 for all six encoder kinds of RoBERTa-base, n = ⌈m / r⌉
    pytest.param("RandLoRA", "roberta-base", "randlora", 64, {}, 12 * 6 * -(-768 // 64) * (64 + 768), id="randlora"),
    # NOLA: d = 2 k · n_modules with k = 128 bases per factor (the setting the table's 0.06M fits)
    pytest.param("NOLA", "llama-2-7b", "nola", 16, {"num_basis": 128}, 2 * 128 * LLAMA_2_7B_ALL_LINEAR, id="nola"),
]


@pytest.mark.parametrize("section, model, projection, rank, kwargs, expected", NEWER_METHOD_COUNTS)
def test_newer_method_paper_row_matches_its_docstring_formula(section, model, projection, rank, kwargs, expected):
    rows = [row for row in newer_rows(section, model, projection, rank) if row.kwargs == kwargs]
    assert len(rows) == 1, f"expected one {section} row for {model} {projection} r={rank} {kwargs}, found {len(rows)}"
    assert counting_tables.count_row(rows[0])["trainable"] == expected


@pytest.mark.parametrize(
    "section, model, projection, rank",
    [("TinyLoRA", "llama-2-7b", "tinylora", 2), ("NOLA", "llama-2-7b", "nola", 16), ("NOLA", "llama-2-7b", "lora", 1)],
)
def test_newer_method_quoted_numbers_agree_with_the_count(section, model, projection, rank):
    """Where a newer method's row quotes a number, our count rounds to it at the source's precision."""
    quoted = [row for row in newer_rows(section, model, projection, rank) if row.paper != "—"]
    assert quoted, f"no {section} row quotes a number for {model} {projection} r={rank}"
    for row in quoted:
        trainable = counting_tables.count_row(row)["trainable"]
        number = row.paper.split()[0]
        if number.endswith("M"):
            assert f"{trainable / 1e6:.2f}M" == number, (row.kwargs, trainable, row.paper)
        else:
            assert trainable == int(number), (row.kwargs, trainable, row.paper)
