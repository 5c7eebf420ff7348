"""The one tiny-model table: an unknown kind is a one-line error naming the valid kinds, through the Python
helpers and through a run's ``model.pretrained=tiny:<kind>``."""

from __future__ import annotations

import json

import pytest
from helpers import train_tiny

from lorazoo.errors import LoraZooError
from lorazoo.train.loading.tiny import TINY_CONFIGS, tiny_config, tiny_fields


@pytest.mark.parametrize("build", [tiny_fields, tiny_config])
def test_an_unknown_kind_names_the_valid_ones(build):
    with pytest.raises(LoraZooError, match=r"model.pretrained='tiny:gpt9' is not valid; choose one of") as err:
        build("gpt9")
    assert all(kind in str(err.value) for kind in TINY_CONFIGS) and "\n" not in str(err.value)


def test_overrides_change_only_what_they_name():
    fields = tiny_fields("llama", max_position_embeddings=64)
    assert fields == {**TINY_CONFIGS["llama"], "max_position_embeddings": 64}
    assert TINY_CONFIGS["llama"]["max_position_embeddings"] == 1024  # the table itself is not changed


def test_a_run_on_an_unknown_tiny_kind_fails_in_one_line(tmp_path):
    with pytest.raises(LoraZooError, match="tiny:gpt9"):
        train_tiny(tmp_path / "run", "model=tiny_bert", "model.pretrained=tiny:gpt9", "trainer.max_steps=1")
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed" and "tiny:gpt9" in record["error"]
