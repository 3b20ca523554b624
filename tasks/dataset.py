from __future__ import annotations

from prefect import task

from codegen_eval.dataset import Case, load_dataset


@task(name="load-dataset")
def load_cases(path: str) -> list[Case]:
    return load_dataset(path)
