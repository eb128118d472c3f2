"""llama.cpp's own `llama-server`, built from the llama.cpp that the llama-cpp-python sdist vendors.

The binary is cached under `.tools/llama-server/bin/` (git-ignored) with the version it came from;
a missing binary or another llama-cpp-python version builds it again (~8 min on 2 cores: run
under the machine's CPU lock where there is one). A static build (`BUILD_SHARED_LIBS=OFF`), so the
binary runs from wherever it is copied.

    .venv/bin/python -m scripts.llama_server          # build (if needed) and print the path
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Optional

import httpx

from scripts.serve_process import ROOT, free_port

TOOLS_DIR = ROOT / ".tools" / "llama-server"
BINARY = TOOLS_DIR / "bin" / "llama-server"
STAMP = TOOLS_DIR / "VERSION"
DEFAULT_VERSION = "0.3.36"  # pyproject.toml's pin, when llama-cpp-python is not installed
# GGML_NATIVE=OFF: the same portable AVX2 build as scripts/setup.sh gives llama-cpp-python (see there).
CMAKE_FLAGS = ("-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=OFF",
               "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF")


def llama_cpp_python_version() -> str:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        return DEFAULT_VERSION


def ensure_binary(jobs: Optional[int] = None) -> Path:
    """The cached binary, built first when it is missing or from another version."""
    version = llama_cpp_python_version()
    if BINARY.is_file() and STAMP.is_file() and STAMP.read_text().strip() == version:
        return BINARY
    build(version, jobs or os.cpu_count() or 1)
    return BINARY


def build(version: str, jobs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="aicore-llama-server-") as tmp:
        work = Path(tmp)
        print(f"building llama-server from llama-cpp-python=={version}'s vendored llama.cpp in {work}",
              file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
                        "--no-binary", ":all:", "-d", str(work)], check=True)
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter="data")
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"))
        subprocess.run(["cmake", "-B", "build", *CMAKE_FLAGS], cwd=source, check=True)
        subprocess.run(["cmake", "--build", "build", "--target", "llama-server", f"-j{jobs}"], cwd=source, check=True)
        built = source / "build" / "bin" / "llama-server"
        staging = TOOLS_DIR.with_name(TOOLS_DIR.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "bin").mkdir(parents=True)
        shutil.copy2(built, staging / "bin" / "llama-server")
        for lib in (source / "build" / "bin").glob("*.so*"):  # none in a static build; kept if any
            shutil.copy2(lib, staging / "bin" / lib.name)
        (staging / "VERSION").write_text(version + "\n")
        check_runs(staging / "bin" / "llama-server")
        shutil.rmtree(TOOLS_DIR, ignore_errors=True)
        staging.rename(TOOLS_DIR)


def check_runs(binary: Path) -> str:
    """`llama-server --version` from where the binary lies; raises if it cannot start."""
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{binary} --version failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return (done.stdout + done.stderr).strip()


class LlamaServer:
    """`llama-server` on 127.0.0.1 and a free port; stopped (with its process group) on exit."""

    def __init__(self, model: Path, threads: int, parallel: int, context_per_sequence: int,
                 log_path: Optional[Path] = None):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = [str(ensure_binary()), "-m", str(model), "-t", str(threads), "-np", str(parallel),
                        "-c", str(parallel * context_per_sequence), "--host", "127.0.0.1", "--port", str(self.port)]
        self.log_path = log_path or Path(tempfile.mkstemp(prefix="aicore-llama-server-", suffix=".log")[1])
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout_s: float = 120) -> "LlamaServer":
        self.proc = subprocess.Popen(self.command, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}); log: {self.log_path}\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(self.base_url + "/health", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"llama-server not ready in {timeout_s}s; log: {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def __enter__(self) -> "LlamaServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    path = ensure_binary()
    print(path)
    print(check_runs(path))
