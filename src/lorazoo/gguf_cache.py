"""A local GGUF checkpoint converted once into a plain transformers directory, which later loads read instead.

transformers reads GGUF by parsing every metadata field in Python and de-quantising every tensor, separately
for the config, the tokenizer and the weights: about 40 s for the packaged SmolLM2-135M on 2 CPU cores, in
every job of a sweep. The converted copy (``save_pretrained`` of what transformers loaded: the de-quantised
float32 weights, config and tokenizer) loads in about a second.

Every load of a local GGUF file goes through the copy, the first one included (it converts, then reads the
copy), so a job gives the same model whether the cache was cold or warm. The copy is keyed by the GGUF file's
content hash and the transformers version that converted it, and is written to a temporary directory that is
renamed into place: a reader never sees half a copy, and two jobs converting at once both end with one copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SOURCE_FILE = "lorazoo_gguf_source.json"  # in each copy: which file and which transformers made it


def cache_root() -> Path:
    """``$LORAZOO_CACHE_DIR``, else ``$XDG_CACHE_HOME/lorazoo``, else ``~/.cache/lorazoo``."""
    if os.environ.get("LORAZOO_CACHE_DIR"):
        return Path(os.environ["LORAZOO_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lorazoo"


def _content_key(path: Path) -> str:
    import transformers

    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    digest.update(f"transformers {transformers.__version__}".encode())
    return digest.hexdigest()[:32]


def converted(directory: str, gguf_file: str) -> Path | None:
    """The transformers directory for ``<directory>/<gguf_file>``, converting it now if needed; None when the
    GGUF file is not a local file (a hub repository id: transformers reads it as before)."""
    path = Path(directory) / gguf_file
    if not path.is_file():
        return None
    target = cache_root() / "gguf" / f"{path.stem}-{_content_key(path)}"
    if (target / SOURCE_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print(f"[lorazoo] converting {path.name} once to {target} (later loads skip the GGUF parse)", file=sys.stderr)
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        _convert(directory, gguf_file, scratch)
        (scratch / SOURCE_FILE).write_text(json.dumps({"gguf": str(path.resolve()), "key": target.name}) + "\n")
        try:
            scratch.rename(target)
        except OSError:
            if not (target / SOURCE_FILE).is_file():  # not another job's finished copy: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(directory: str, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=gguf_file, dtype=torch.float32, trust_remote_code=False
    )
    quantizer: Any = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the tensors are plain floats now; keep no GGUF marker
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file, trust_remote_code=False).save_pretrained(out)
