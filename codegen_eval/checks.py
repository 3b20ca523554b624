"""Checks that need no model: is there code, and does it parse in its format."""

from __future__ import annotations

import ast
import json
import re
from enum import StrEnum

from pydantic import BaseModel

from codegen_eval.dataset import Format


class CheckStatus(StrEnum):
    OK = "OK"
    NO_CODE = "NO_CODE"
    SYNTAX_ERROR = "SYNTAX_ERROR"


class CheckResult(BaseModel):
    name: str
    status: CheckStatus
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status is CheckStatus.OK


def check_syntax(code: str, fmt: Format) -> CheckResult:
    if not code.strip():
        return CheckResult(name="syntax", status=CheckStatus.NO_CODE, message="the model returned no code")
    try:
        _PARSERS[fmt](code)
    except SyntaxError as exc:
        return _syntax_error(f"line {exc.lineno}: {exc.msg}")
    except json.JSONDecodeError as exc:
        return _syntax_error(f"line {exc.lineno} column {exc.colno}: {exc.msg}")
    except re.error as exc:
        return _syntax_error(f"position {exc.pos}: {exc.msg}")
    except (ValueError, RecursionError, OverflowError) as exc:
        return _syntax_error(str(exc) or type(exc).__name__)
    return CheckResult(name="syntax", status=CheckStatus.OK, message=f"valid {fmt}")


def run_checks(code: str, fmt: Format) -> list[CheckResult]:
    return [check_syntax(code, fmt)]


def _syntax_error(message: str) -> CheckResult:
    return CheckResult(name="syntax", status=CheckStatus.SYNTAX_ERROR, message=message)


_PARSERS = {"python": ast.parse, "json": json.loads, "regex": re.compile}
