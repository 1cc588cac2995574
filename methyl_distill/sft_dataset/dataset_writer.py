"""Writing the dataset: JSON lines per split, the same as a DatasetDict on disk, atomically.

Everything is written into a staging folder beside the output directory and renamed into place at
the end, so readers see the old dataset or the new one, never half of one. An existing output
directory is replaced only if it is a dataset this stage wrote (it holds `MARKER_FILE`); any other
non-empty folder is refused, so a mistyped path never deletes someone's files.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path

import orjson

logger = logging.getLogger(__name__)

MARKER_FILE = ".methyl-distill-dataset"
SPLIT_FILES = {"train": "train.jsonl", "validation": "val.jsonl", "test": "test.jsonl"}
DATASET_DICT_DIR = "dataset_dict"
CARD_FILE = "README.md"
STATS_FILE = "stats.json"


class OutputDirectoryError(ValueError):
    """The output directory cannot be (re)placed by a dataset."""


def check_output_directory(output_directory: Path) -> None:
    """Refuse a path that is a file or a non-empty folder this stage did not write."""
    if not output_directory.exists():
        return
    if not output_directory.is_dir():
        raise OutputDirectoryError(f"{output_directory}: exists and is not a directory")
    if any(output_directory.iterdir()) and not (output_directory / MARKER_FILE).exists():
        raise OutputDirectoryError(
            f"{output_directory}: a non-empty directory that is not a dataset written by methyl-distill; "
            "choose a new or empty directory (it would be replaced as a whole)"
        )


def make_staging_directory(output_directory: Path) -> Path:
    output_directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_directory.name}.staging-", dir=output_directory.parent))
    staging.chmod(0o755)
    return staging


def write_jsonl(path: Path, lines: Iterable[bytes]) -> int:
    """Write JSON lines given as UTF-8 bytes, each ending with its newline; returns how many."""
    count = 0
    with path.open("wb") as handle:
        for line in lines:
            handle.write(line)
            count += 1
        handle.flush()
        os.fsync(handle.fileno())
    return count


def sample_line(messages: list[dict[str, str]], meta: dict[str, object] | None) -> bytes:
    """One JSON line (UTF-8, compact, without the newline)."""
    row: dict[str, object] = {"messages": messages}
    if meta is not None:
        row["meta"] = meta
    return orjson.dumps(row)


def write_dataset_dict(staging: Path, include_meta: bool) -> None:
    """The split files as a `datasets.DatasetDict` saved to disk (parsed by pyarrow, no HF cache)."""
    import datasets
    import pyarrow as pa
    import pyarrow.json as pa_json
    from datasets import Dataset, DatasetDict

    fields = [
        pa.field(
            "messages",
            pa.list_(pa.struct([pa.field("role", pa.string()), pa.field("content", pa.string())])),
        )
    ]
    if include_meta:
        fields.append(
            pa.field(
                "meta",
                pa.struct(
                    [
                        pa.field("file_id", pa.string()),
                        pa.field("style", pa.string()),
                        pa.field("flags", pa.list_(pa.string())),
                        pa.field("markers", pa.list_(pa.string())),
                        pa.field("tokens", pa.int64()),
                    ]
                ),
            )
        )
    schema = pa.schema(fields)
    # Each split is parsed in blocks and streamed to an Arrow file that the Dataset memory-maps, so
    # memory stays flat however large the split; save_to_disk then writes the DatasetDict from it.
    scratch = staging / ".arrow"
    scratch.mkdir()
    splits = {}
    for split, name in SPLIT_FILES.items():
        path, arrow_path = staging / name, scratch / f"{split}.arrow"
        with pa.OSFile(str(arrow_path), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            if path.stat().st_size:
                reader = pa_json.open_json(
                    path,
                    read_options=pa_json.ReadOptions(block_size=1 << 23),
                    parse_options=pa_json.ParseOptions(
                        explicit_schema=schema, unexpected_field_behavior="error"
                    ),
                )
                for batch in reader:
                    writer.write_batch(batch)
        splits[split] = Dataset.from_file(str(arrow_path), split=split)
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # one bar per split and shard is noise in a pipeline's log
    try:
        DatasetDict(splits).save_to_disk(str(staging / DATASET_DICT_DIR))
    finally:
        if not quiet:
            datasets.enable_progress_bars()
        del splits
        shutil.rmtree(scratch, ignore_errors=True)


def publish(staging: Path, output_directory: Path) -> None:
    """Move the finished staging folder into place (replacing an earlier dataset there)."""
    (staging / MARKER_FILE).write_text("written by methyl-distill build-dataset\n", encoding="utf-8")
    check_output_directory(output_directory)  # again: it may have changed while we built
    if output_directory.exists():
        retired = output_directory.with_name(f".{output_directory.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(output_directory, retired)
        os.rename(staging, output_directory)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(staging, output_directory)
    logger.info("Dataset written to %s", output_directory)
