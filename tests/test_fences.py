"""Other projects' names this project relies on beyond their documented top level, one test per project.

Each fails with a message naming the module of ours that uses the name and what to do, so an upgrade
that removes one is caught here rather than as a wrong verdict.
"""

from __future__ import annotations

import importlib

import pytest

FENCES = [
    # (module, name, our module that uses it, why)
    ("moto.server", "create_backend_app", "codegen_eval/grading/aws_endpoint.py", "moto's per-service server app (what moto_server serves)"),
    ("botocore.serialize", "create_serializer", "codegen_eval/grading/aws_answers.py", "a handler's altered parameters, serialized as botocore sends them"),
    ("botocore.parsers", "create_parser", "codegen_eval/grading/aws_answers.py", "a forwarded answer, parsed as botocore parses it"),
    ("prefect.server.api.server", "SubprocessASGIServer", "codegen_eval/orchestration/quiet_prefect.py", "Prefect's own temporary server, started when none is configured"),
    ("prefect.events.worker", "EventsWorker", "codegen_eval/orchestration/quiet_prefect.py", "events flushed (drain_all) before that server stops"),
    ("prefect.logging.handlers", "APILogHandler", "codegen_eval/orchestration/quiet_prefect.py", "logs flushed before that server stops"),
    ("prefect.logging.handlers", "PrefectConsoleHandler", "codegen_eval/orchestration/quiet_prefect.py", "Prefect's INFO lines kept off the terminal"),
    ("werkzeug.serving", "make_server", "codegen_eval/grading/aws_endpoint.py", "the endpoint's HTTP server on a socket bound before the candidate exists"),
]


@pytest.mark.parametrize(("module", "name", "user", "why"), FENCES, ids=[f"{m}.{n}" for m, n, _, _ in FENCES])
def test_names_we_rely_on_still_exist(module, name, user, why):
    found = getattr(importlib.import_module(module), name, None)
    if name == "EventsWorker":
        found = getattr(found, "drain_all", None)
    assert callable(found), f"{module}.{name} is gone ({why}); {user} uses it: adapt it, or pin the version that has it in pyproject.toml"


def test_moto_serves_the_services_the_endpoint_warms():
    from codegen_eval.grading.aws_endpoint import backend_app
    from codegen_eval.grading.harness import AWS_SERVICES

    for service in AWS_SERVICES:
        assert callable(backend_app(service)), f"moto has no server app for {service}"


def test_prefects_temporary_server_keeps_its_process_where_a_stopping_run_kills_it():
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer(port=1)  # not started
    try:
        assert hasattr(server, "server_process"), (
            "SubprocessASGIServer.server_process is gone; codegen_eval/orchestration/quiet_prefect.py (QuietRun.kill_server) uses it"
        )
    finally:
        server.stop()
