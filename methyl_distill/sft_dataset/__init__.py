"""The dataset stage: extraction records -> a fine-tuning dataset that ms-swift trains on as it is.

See docs/dataset.md. `build_sft_dataset` is the plain core; `methyl_distill.tasks.dataset.build_dataset` and
`methyl_distill.flows.dataset.build_dataset_flow` wrap it for Prefect.
"""

from methyl_distill.sft_dataset.build import DatasetSummary, EmptyDatasetError, SplitStats, build_sft_dataset
from methyl_distill.sft_dataset.config import DatasetConfig, DatasetConfigError, SampleMix
from methyl_distill.sft_dataset.dataset_writer import OutputDirectoryError
from methyl_distill.sft_dataset.record_reader import RecordsFileError

__all__ = [
    "DatasetConfig",
    "DatasetConfigError",
    "DatasetSummary",
    "EmptyDatasetError",
    "OutputDirectoryError",
    "RecordsFileError",
    "SampleMix",
    "SplitStats",
    "build_sft_dataset",
]
