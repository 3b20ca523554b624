"""The dataset: what a case is (`schema`), reading and validating a file of cases (`load`), and proving
every reference against its own tests before a model is paid (`proof`)."""

from codegen_eval.dataset.load import (
    HUMANEVAL_FIELDS,
    DatasetError,
    RecordedOutput,
    batches,
    content_id,
    dataset_ids,
    from_humaneval,
    iter_cases,
    load_dataset,
    load_outputs,
    numbered_cases,
    numbered_outputs,
    read_cases,
)
from codegen_eval.dataset.schema import (
    AccessProbe,
    Case,
    Difficulty,
    Format,
    PolicyTests,
    PythonTests,
    RegexTests,
    reference_problems,
)

__all__ = [
    "HUMANEVAL_FIELDS", "AccessProbe", "Case", "DatasetError", "Difficulty", "Format", "PolicyTests", "PythonTests",
    "RecordedOutput", "RegexTests", "batches", "content_id", "dataset_ids", "from_humaneval", "iter_cases",
    "load_dataset", "load_outputs", "numbered_cases", "numbered_outputs", "read_cases", "reference_problems",
]
