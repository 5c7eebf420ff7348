"""Task data readers, GLUE TSV layouts, metrics and the fast offline failure (no model needed)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from lorazoo import LoraZooError
from lorazoo.train.errors import DataFormatError, DataUnavailableError
from lorazoo.train.evaluation.metrics import compute, majority_rate
from lorazoo.train.loading import hub
from lorazoo.train.tasks import build_task
from lorazoo.train.tasks.math_answers import extract_prediction, is_equivalent, parse_answer

SHARED_GLUE = Path(__file__).resolve().parents[4] / "shared" / "data" / "glue"

# one tiny file per GLUE task in the classic layout: (file name, text)
TSV = {
    "cola": ("train.tsv", "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n"),
    "sst2": ("train.tsv", "sentence\tlabel\na gripping film \t1\ndull and slow \t0\n"),
    "mrpc": (
        "train.tsv",
        "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\tA cat sat.\tThe cat sat.\n0\t3\t4\tIt rains.\tStocks fell.\n",
    ),
    "qqp": (
        "train.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n0\t1\t2\tHow?\tHow so?\t1\n1\t3\t4\tWhy?\tWhen?\t0\n",
    ),
    "stsb": (
        "train.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tg\tf\t2012\t0\tn\tn\tA man runs.\tA man is running.\t4.750\n1\tg\tf\t2012\t1\tn\tn\tA dog.\tA car.\t0\n",
    ),
    "mnli": (
        "train.tsv",
        "index\tpromptID\tpairID\tgenre\ts1bp\ts2bp\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
        "0\t1\t1e\tgov\tx\tx\tx\tx\tHe left.\tHe is gone.\tentailment\tentailment\n"
        "1\t2\t2c\tgov\tx\tx\tx\tx\tHe left.\tHe stayed.\tcontradiction\tcontradiction\n",
    ),
    "qnli": (
        "train.tsv",
        "index\tquestion\tsentence\tlabel\n0\tWho?\tShe did.\tentailment\n1\tWhere?\tNo idea.\tnot_entailment\n",
    ),
    "rte": (
        "train.tsv",
        "index\tsentence1\tsentence2\tlabel\n0\tA is B.\tB is A.\tentailment\n1\tA.\tC.\tnot_entailment\n",
    ),
}
EXPECTED = {  # (text_a of row 1, text_b of row 1, labels)
    "cola": ("Our friends won't buy this analysis.", None, [1, 0]),
    "sst2": ("a gripping film ", None, [1, 0]),
    "mrpc": ("A cat sat.", "The cat sat.", [1, 0]),
    "qqp": ("How?", "How so?", [1, 0]),
    "stsb": ("A man runs.", "A man is running.", [4.75, 0.0]),
    "mnli": ("He left.", "He is gone.", [0, 2]),
    "qnli": ("Who?", "She did.", [0, 1]),
    "rte": ("A is B.", "B is A.", [0, 1]),
}


def glue_task(subset: str, **options):
    return build_task(OmegaConf.create({"name": f"glue/{subset}", **options}), seed=0)


@pytest.mark.parametrize("subset", sorted(TSV))
def test_glue_tsv_layouts(tmp_path: Path, subset: str):
    name, text = TSV[subset]
    (tmp_path / name).write_text(text)
    (tmp_path / ("dev_matched.tsv" if subset == "mnli" else "dev.tsv")).write_text(text)
    task = glue_task(subset, data_dir=str(tmp_path))
    task.load()
    a, b, labels = EXPECTED[subset]
    assert task.train_rows[0][:2] == (a, b)
    assert [r[2] for r in task.eval_rows] == labels
    assert task.num_labels == (1 if subset == "stsb" else 3 if subset == "mnli" else 2)


def test_malformed_row_names_file_and_line(tmp_path: Path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad row without label\n")
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(DataFormatError, match=r"train\.tsv:3"):
        glue_task("sst2", data_dir=str(tmp_path)).load()
    (tmp_path / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\tmaybe\n")
    with pytest.raises(DataFormatError, match=r"train\.tsv:3.*'maybe'"):
        glue_task("sst2", data_dir=str(tmp_path)).load()
    task = glue_task("sst2", data_dir=str(tmp_path), skip_malformed=True)
    task.load()
    assert len(task.train_rows) == 1


def test_empty_and_missing_files(tmp_path: Path):
    (tmp_path / "train.tsv").write_text("")
    with pytest.raises(DataFormatError, match="empty"):
        glue_task("sst2", data_dir=str(tmp_path)).load()
    with pytest.raises(DataUnavailableError, match="task.data_dir"):
        glue_task("rte", data_dir=str(tmp_path / "nowhere")).load()


@pytest.mark.parametrize("env", [{"HF_DATASETS_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_hub_unreachable_fails_fast_and_says_how(monkeypatch, env):
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    hub._probe.cache_clear()
    started = time.perf_counter()
    with pytest.raises(DataUnavailableError, match=r"task\.data_dir=") as info:
        glue_task("sst2").load()
    assert time.perf_counter() - started < hub.PROBE_TIMEOUT_S + 2
    assert "\n" not in str(info.value) and isinstance(info.value, LoraZooError)
    hub._probe.cache_clear()


def test_unknown_task_and_key():
    with pytest.raises(LoraZooError, match="glue/sst2"):
        glue_task("sst3")
    with pytest.raises(LoraZooError, match="registered"):
        build_task(OmegaConf.create({"name": "nope"}), 0)
    with pytest.raises(LoraZooError, match="max_train_sample"):
        glue_task("sst2", max_train_sample=10)


def test_metrics_match_independent_formulas():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    preds = np.where(rng.random(200) < 0.8, labels, 1 - labels)
    out = compute(["accuracy", "f1", "matthews_correlation"], preds, labels)
    tp, fp = int(((preds == 1) & (labels == 1)).sum()), int(((preds == 1) & (labels == 0)).sum())
    fn, tn = int(((preds == 0) & (labels == 1)).sum()), int(((preds == 0) & (labels == 0)).sum())
    assert out["accuracy"] == pytest.approx((tp + tn) / 200)
    assert out["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert out["matthews_correlation"] == pytest.approx(mcc)
    x = rng.random(50)
    y = 2 * x + 0.1 * rng.random(50)
    reg = compute(["pearson", "spearmanr"], x, y)
    assert reg["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1])

    def ranks(v):
        return np.argsort(np.argsort(v))

    assert reg["spearmanr"] == pytest.approx(np.corrcoef(ranks(x), ranks(y))[0, 1])
    assert majority_rate([0, 1, 1, 2]) == 0.5


@pytest.mark.parametrize(
    "text,expected",
    [
        ("She has 3 + 4 = <<3+4=7>>7 apples.\n#### 7", "7"),
        ("#### 1,234", "1234"),
        ("The answer is 12.", "12"),
        ("so -3.50 dollars", "-3.5"),
        ("18.0", "18"),
    ],
)
def test_gsm8k_final_answer(text, expected):
    assert is_equivalent(extract_prediction(text), parse_answer(expected))
    assert not extract_prediction("no number")


def test_tweets_split_is_fixed_and_beatable():
    task = build_task(OmegaConf.create({"name": "tweets", "max_train_samples": 100, "max_eval_samples": 500}), seed=3)
    task.load()
    again = build_task(OmegaConf.create({"name": "tweets", "max_train_samples": 100, "max_eval_samples": 500}), seed=9)
    again.load()
    assert (
        task.train_rows == again.train_rows and task.eval_rows == again.eval_rows
    )  # the training seed does not move it
    assert len(task.train_rows) == 100 and len(task.eval_rows) == 500
    assert 0.33 < task.summary()["majority_rate"] < 0.6


@pytest.mark.skipif(not (SHARED_GLUE / "STS-B" / "dev.tsv").exists(), reason="shared GLUE data absent")
def test_real_glue_files_parse():
    task = glue_task("stsb", data_dir=str(SHARED_GLUE / "STS-B"))
    task.load()
    assert (len(task.train_rows), len(task.eval_rows)) == (5749, 1500)
    qnli = glue_task("qnli", data_dir=str(SHARED_GLUE / "QNLI"), train_file="dev.tsv")
    qnli.load()
    assert len(qnli.eval_rows) == 5463 and {r[2] for r in qnli.eval_rows} == {0, 1}
