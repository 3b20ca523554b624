# Sourced by eval.sh and test.sh: one venv in .venv, the project installed editable into it.
python_bin="${PYTHON:-python3}"
if ! "$python_bin" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "codegen-eval needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python_bin" -m venv .venv

# Installs ".$1" (e.g. "[local,dev]") unless the same extras were installed from the same pyproject.toml.
install_project() {
  local stamp=".venv/.installed-$(printf '%s' "$1" | tr -c 'a-z' '-')"
  local want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
  if [[ "$1" == *local* ]] && ! .venv/bin/python -c 'import llama_cpp' 2>/dev/null; then
    echo "Installing llama-cpp-python: the first time it compiles from source (about 15-20 min on 2 cores);" >&2
    echo "pip caches the wheel, so later installs take seconds." >&2
  fi
  # A portable llama.cpp build (AVX2, no -march=native): a native build on a CPU that advertises AMX
  # (Sapphire Rapids and later, often in VMs) uses AMX tiles from worker threads that the kernel has
  # not allowed them, and segfaults in ggml_backend_amx_mul_mat (llama.cpp #20824). A CMAKE_ARGS of
  # your own wins. pip caches the wheel it builds, whatever the flags: `pip cache remove llama_cpp_python`
  # before changing them.
  if [[ "$1" == *local* ]] && [ -z "${CMAKE_ARGS:-}" ] && [ "$(uname -m)" = x86_64 ]; then
    export CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  fi
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".$1" >&2
  echo "$want" > "$stamp"
}
