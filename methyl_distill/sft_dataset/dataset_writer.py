"""Writing the dataset: JSON lines per split, the same as a DatasetDict on disk, atomically.

Everything is written into a staging folder beside the output directory and swapped into place at
the end in one step (renameat2's RENAME_EXCHANGE on Linux; two renames elsewhere), so readers see
the old dataset or the new one, never half of one and never none. Staging folders that a killed
build left behind are removed by the next build (each names its owner's pid). An existing output
directory is replaced only if it is a dataset this stage wrote (it holds `MARKER_FILE`); any other
non-empty folder is refused, so a mistyped path never deletes someone's files.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import shutil
import sys
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


_OWNER_FILE = ".owner-pid"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_staging(output_directory: Path) -> int:
    """Delete staging and retired folders beside `output_directory` that no live build owns (a killed
    build leaves them); returns how many."""
    removed = 0
    for prefix in (f".{output_directory.name}.staging-", f".{output_directory.name}.old-"):
        for folder in output_directory.parent.glob(f"{prefix}*"):
            try:
                owner = int((folder / _OWNER_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                owner = None
            if owner is not None and owner != os.getpid() and _process_alive(owner):
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    if removed:
        logger.info(
            "Removed %d staging folder(s) that killed builds left beside %s", removed, output_directory
        )
    return removed


def make_staging_directory(output_directory: Path) -> Path:
    output_directory.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output_directory)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_directory.name}.staging-", dir=output_directory.parent))
    staging.chmod(0o755)
    (staging / _OWNER_FILE).write_text(str(os.getpid()), encoding="utf-8")
    return staging


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 RENAME_EXCHANGE): readers see the old
    folder or the new one, never neither. False where the system cannot (then nothing happened)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # this filesystem cannot exchange
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))


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
    (staging / _OWNER_FILE).unlink(missing_ok=True)
    if not output_directory.exists():
        os.rename(staging, output_directory)
    elif exchange_paths(staging, output_directory):
        shutil.rmtree(staging, ignore_errors=True)  # the old dataset, now at the staging path
    else:  # two renames: a moment with no directory, where the system cannot exchange
        retired = output_directory.with_name(f".{output_directory.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(output_directory, retired)
        os.rename(staging, output_directory)
        shutil.rmtree(retired, ignore_errors=True)
    logger.info("Dataset written to %s", output_directory)
