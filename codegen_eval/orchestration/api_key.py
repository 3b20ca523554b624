"""The Anthropic API key of a deployment, from a Prefect Secret block.

The block's *name* travels in the run's settings (`RunConfig.api_key_block`); its value is read by the
flow at run time and put into this process's environment only, where the Anthropic SDK reads it: never
into the settings, the flow's parameters, run.json, a log line, an artifact, an event or a cache key.
"""

from __future__ import annotations

import os

from codegen_eval.models.backends import ConfigError, reset_backends

ENV_VAR = "ANTHROPIC_API_KEY"


def use_api_key_block(block_name: str | None) -> None:
    """Load Secret block `block_name` into ANTHROPIC_API_KEY for this process; nothing when None."""
    if not block_name:
        return
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block_name).get()
    except ValueError as exc:  # no such block, or not a Secret
        raise ConfigError(f"Prefect Secret block {block_name!r} could not be loaded: {exc}") from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"Prefect Secret block {block_name!r} must hold the API key as a non-empty string")
    os.environ[ENV_VAR] = value.strip()
    reset_backends()  # backends read the key when made
