"""Data you can trust: official GLUE files load as distributed for all eight tasks; a bad row is
named by file and line; NaN or out-of-set labels never reach training. No model is loaded here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import SHARED_DATA
from omegaconf import OmegaConf

from lorazoo.train.errors import DataFormatError
from lorazoo.train.tasks import build_task

GLUE_DIR = SHARED_DATA / "glue"

# The official layouts (download_glue_data.py): CoLA has no header; MRPC's header keeps the byte-order mark of
# msr_paraphrase_train.txt; MNLI dev_matched has five annotator columns; text holds unbalanced quotes.
OFFICIAL = {
    "cola": {
        "train.tsv": "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
        "gj04\t0\t*\tThey drank the pub.\n"
        'cj99\t1\t\tHe said "no.\n',
        "dev.tsv": "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more you eat, the less.\n",
    },
    "mrpc": {
        "train.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        '1\t702876\t702977\tAmrozi accused his brother , whom he called " the witness " , of deliberately '
        'distorting his evidence .\tReferring to him as only " the witness " , Amrozi accused his brother .\n'
        "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to Safeway in 1998 .\t"
        "Yucaipa bought Dominick 's in 1995 for $ 693 million .\n",
        "dev.tsv": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
        "1\t1355540\t1355592\tHe said \"the foodservice pie business doesn 't fit .\tThe company said it .\n",
    },
    "qqp": {
        "train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "133273\t213221\t213222\tHow is the life of a math student? Could you describe your own experiences?"
        "\tWhich level of prepration is enough for the exam jlpt5?\t0\n"
        "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1\n",
        "dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        '201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so "beautiful?\t0\n',
    },
    "mnli": {
        "train.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
        "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
        "0\t31193\t31193n\tgovernment\t( ( x ) )\t( ( y ) )\t(ROOT (S x))\t(ROOT (S y))\tConceptually cream "
        "skimming has two basic dimensions - product and geography.\tProduct and geography are what make "
        "cream skimming work. \tneutral\tneutral\n",
        "dev_matched.tsv": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
        "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5"
        "\tgold_label\n"
        "0\t63735\t63735n\tslate\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThe new rights are nice enough\t"
        "Everyone really likes the newest benefits \tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n"
        "1\t91383\t91383c\tgovernment\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThis site includes a list\t"
        "The Government Executive articles housed on the website are not able to be searched .\t"
        "contradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n",
    },
    "rte": {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n"
        "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\t"
        "not_entailment\n"
        "1\tA place of sorrow, after Pope John Paul II died, became a place of celebration, as Roman Catholic "
        'faithful gathered in downtown Chicago to mark the "installation of new Pope Benedict XVI.\t'
        "Pope Benedict XVI is the new leader of the Roman Catholic Church.\tentailment\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n0\tDana Reeve, the widow of the actor, died.\tChristopher Reeve had "
        "an accident.\tnot_entailment\n",
    },
    "sst2": {
        "train.tsv": "sentence\tlabel\nhide new secretions from the parental units \t0\nthe greatest musicians \t1\n",
        "dev.tsv": "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n",
    },
    "stsb": {
        "train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is "
        "taking off.\t5.000\n1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a large "
        "flute.\tA man is playing a flute.\t3.800\n",
        "dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing "
        "a hard hat is dancing.\t5.000\n1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA young child is riding a "
        "horse.\tA child is riding a horse.\t4.750\n",
    },
    "qnli": {
        "train.tsv": "index\tquestion\tsentence\tlabel\n0\tWhen did the third Digimon series begin?\tUnlike the two "
        'seasons before it, it was "dark.\tnot_entailment\n',
        "dev.tsv": "index\tquestion\tsentence\tlabel\n0\tWhat came into force after the new constitution was herald?\t"
        "As of that day, the new constitution heralding the Second Republic came into force.\tentailment\n",
    },
}
FIRST_TRAIN = {  # (text_a, text_b, label) of each fixture's first train row, quotes and trailing spaces kept
    "cola": ("Our friends won't buy this analysis, let alone the next one we propose.", None, 1),
    "mrpc": (
        'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
        'Referring to him as only " the witness " , Amrozi accused his brother .',
        1,
    ),
    "qqp": (
        "How is the life of a math student? Could you describe your own experiences?",
        "Which level of prepration is enough for the exam jlpt5?",
        0,
    ),
    "mnli": (
        "Conceptually cream skimming has two basic dimensions - product and geography.",
        "Product and geography are what make cream skimming work. ",
        1,
    ),
    "rte": ("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", 1),
    "sst2": ("hide new secretions from the parental units ", None, 0),
    "stsb": ("A plane is taking off.", "An air plane is taking off.", 5.0),
    "qnli": ("When did the third Digimon series begin?", 'Unlike the two seasons before it, it was "dark.', 1),
}
ROWS = {
    "cola": (3, 2),
    "mrpc": (2, 1),
    "qqp": (2, 1),
    "mnli": (1, 2),
    "rte": (2, 1),
    "sst2": (2, 1),
    "stsb": (2, 2),
    "qnli": (1, 1),
}


def glue(subset: str, folder: Path, **options):
    task = build_task(OmegaConf.create({"name": f"glue/{subset}", "data_dir": str(folder), **options}), seed=0)
    task.load()
    return task


def write(folder: Path, files: dict[str, str], encoding: str = "utf-8", newline: str = "\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_bytes(text.replace("\n", newline).encode(encoding))
    return folder


@pytest.mark.parametrize("subset", sorted(OFFICIAL))
def test_official_glue_layouts_load_as_distributed(tmp_path: Path, subset: str):
    task = glue(subset, write(tmp_path, OFFICIAL[subset]))
    assert task.train_rows[0] == FIRST_TRAIN[subset]
    assert (len(task.train_rows), len(task.eval_rows)) == ROWS[subset]


@pytest.mark.parametrize(
    "encoding,newline", [("utf-8", "\n"), ("utf-8-sig", "\n"), ("utf-8", "\r\n"), ("utf-16", "\n"), ("utf-16", "\r\n")]
)
@pytest.mark.parametrize("subset", ["mrpc", "cola", "stsb"])
def test_glue_encodings_and_line_endings(tmp_path: Path, subset: str, encoding: str, newline: str):
    files = {k: v.lstrip("\ufeff") for k, v in OFFICIAL[subset].items()}
    task = glue(subset, write(tmp_path, files, encoding, newline))
    assert task.train_rows[0] == FIRST_TRAIN[subset] and len(task.train_rows) == ROWS[subset][0]


def test_text_with_line_separator_characters_stays_one_row(tmp_path: Path):
    """GLUE text may hold U+2028 / U+0085 / a lone CR: only '\\n' ends a row."""
    files = {
        "train.tsv": "sentence\tlabel\none\u2028two\x85three\rfour \t1\nfive \t0\n",
        "dev.tsv": "sentence\tlabel\nsix \t1\n",
    }
    task = glue("sst2", write(tmp_path, files))
    assert [r[0] for r in task.train_rows] == ["one\u2028two\x85three\rfour ", "five "]


@pytest.mark.skipif(not (GLUE_DIR / "SST-2" / "dev.tsv").exists(), reason="shared GLUE data absent")
@pytest.mark.parametrize(
    "subset,folder,train_file,sizes",
    [
        ("sst2", "SST-2", None, (67349, 872)),
        ("stsb", "STS-B", None, (5749, 1500)),
        ("qnli", "QNLI", "dev.tsv", (5463, 5463)),
    ],
)
def test_real_glue_files_load_completely(subset: str, folder: str, train_file: str | None, sizes: tuple[int, int]):
    """Row counts of the byte-for-byte GLUE copies in shared/data (its README): nothing dropped, nothing merged."""
    task = glue(subset, GLUE_DIR / folder, **({"train_file": train_file} if train_file else {}))
    assert (len(task.train_rows), len(task.eval_rows)) == sizes


# ============================================================================ bad rows: file and line
BAD_ROWS = {
    "stsb nan score": (
        "stsb",
        "dev.tsv",
        2,
        "nan",
        r"dev\.tsv:2: score 'nan' is invalid; valid: a finite number in \[0, 5\]",
    ),
    "stsb non-numeric": ("stsb", "train.tsv", 3, "high", r"train\.tsv:3: score 'high' is invalid"),
    "stsb out of range": ("stsb", "train.tsv", 2, "7.5", r"train\.tsv:2: score '7\.5' is invalid; valid: .*\[0, 5\]"),
    "stsb inf": ("stsb", "dev.tsv", 2, "inf", r"dev\.tsv:2: score 'inf' is invalid"),
    "sst2 label 2": (
        "sst2",
        "train.tsv",
        3,
        "2",
        r"train\.tsv:3: label '2' is not in the label set; valid: \['0', '1'\]",
    ),
    "mnli typo": (
        "mnli",
        "dev_matched.tsv",
        3,
        "contradictio",
        r"dev_matched\.tsv:3: label 'contradictio' is not in the label set; valid: \['entailment', 'neutral', ",
    ),
    "rte label": (
        "rte",
        "train.tsv",
        2,
        "0",
        r"train\.tsv:2: label '0' is not in the label set; valid: \['entailment'",
    ),
    "cola label": ("cola", "train.tsv", 2, "x", r"train\.tsv:2: label 'x' is not in the label set"),
}


def _with_label(text: str, line: int, label: str, column: int | None) -> str:
    lines = text.split("\n")
    fields = lines[line - 1].split("\t")
    fields[-1 if column is None else column] = label
    lines[line - 1] = "\t".join(fields)
    return "\n".join(lines)


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_label_names_file_and_line(tmp_path: Path, case: str):
    subset, name, line, label, pattern = BAD_ROWS[case]
    files = dict(OFFICIAL[subset])
    files[name] = _with_label(files[name], line, label, 1 if subset == "cola" else None)
    with pytest.raises(DataFormatError, match=pattern):
        glue(subset, write(tmp_path, files))
    skipped = glue(subset, tmp_path, skip_malformed=True)  # the documented way to drop such rows
    rows = skipped.eval_rows if "dev" in name else skipped.train_rows
    assert all(r[2] == r[2] for r in rows)  # no NaN label left


def test_short_row_and_bad_bytes_name_the_line(tmp_path: Path):
    files = dict(OFFICIAL["qqp"])
    files["train.tsv"] += "5\t6\t7\tonly one question\n"
    with pytest.raises(DataFormatError, match=r"train\.tsv:4: 4 tab-separated fields, expected at least 6"):
        glue("qqp", write(tmp_path, files))
    (tmp_path / "train.tsv").write_bytes(OFFICIAL["qqp"]["train.tsv"].encode() + b"9\t1\t2\tcaf\xe9?\tcafe?\t1\n")
    with pytest.raises(
        DataFormatError, match=r"train\.tsv:4: byte b'\\xe9' is not valid utf-8; valid: a UTF-8 text file"
    ):
        glue("qqp", tmp_path)


def test_hub_rows_are_checked_too():
    task = build_task(OmegaConf.create({"name": "glue/sst2"}), seed=0)
    split = {"sentence": ["good", "unlabelled"], "label": [1, -1]}
    with pytest.raises(
        DataFormatError, match=r"nyu-mll/glue/sst2 split 'test' row 1: label -1 is not in the label set"
    ):
        task._from_hub(split, "test")
    stsb = build_task(OmegaConf.create({"name": "glue/stsb"}), seed=0)
    with pytest.raises(DataFormatError, match=r"row 0: score nan is invalid"):
        stsb._from_hub({"sentence1": ["a"], "sentence2": ["b"], "label": [float("nan")]}, "validation")


def test_tweets_confidence_names_the_line(tmp_path: Path):
    (tmp_path / "t.csv").write_text("sentiment,confidence,text\npositive,0.9,nice\nnegative,high,awful\n")
    task = build_task(
        OmegaConf.create({"name": "tweets", "data_file": str(tmp_path / "t.csv"), "min_confidence": 0.5}), 0
    )
    with pytest.raises(DataFormatError, match=r"t\.csv:3: confidence 'high' is invalid; valid: a number in \[0, 1\]"):
        task.load()


def test_deeply_nested_json_data_is_one_line(tmp_path: Path):
    deep = "[" * 5000 + "]" * 5000
    (tmp_path / "alpaca.json").write_text(f'[{{"instruction": "x", "input": "", "output": {deep}}}]')
    task = build_task(OmegaConf.create({"name": "instruct/alpaca", "data_file": str(tmp_path / "alpaca.json")}), 0)
    with pytest.raises(DataFormatError, match=r"alpaca\.json: JSON nested 5002 levels deep; valid: at most 64"):
        task.load()


def test_symlink_to_a_device_is_not_reported_missing(tmp_path: Path):
    (tmp_path / "train.tsv").symlink_to("/dev/zero")
    (tmp_path / "dev.tsv").write_text(OFFICIAL["sst2"]["dev.tsv"])
    with pytest.raises(
        DataFormatError,
        match=r"train\.tsv' is not a regular file \(it resolves to '/dev/zero'\); valid: a regular file",
    ):
        glue("sst2", tmp_path)
    (tmp_path / "dev.tsv").unlink()
    (tmp_path / "dev.tsv").symlink_to(tmp_path / "gone.tsv")
    (tmp_path / "train.tsv").unlink()
    (tmp_path / "train.tsv").write_text(OFFICIAL["sst2"]["train.tsv"])
    from lorazoo.train.errors import DataUnavailableError

    with pytest.raises(DataUnavailableError, match=r"dev\.tsv' is a broken symlink to '.*gone\.tsv'"):
        glue("sst2", tmp_path)


def test_jsonl_line_errors(tmp_path: Path):
    from lorazoo.train.tasks.base import read_jsonl

    (tmp_path / "x.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"x\.jsonl:2:1: not valid JSON"):
        read_jsonl(tmp_path / "x.jsonl")
