"""The vLLM server lifecycle: clear errors before start, a healthy server, nothing left behind."""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from pathlib import Path

import pytest

from harness.config import ServeConfig
from harness.serve import HOST, LoraModule, ServerError, ServerSpec, VllmServer, server_command


def test_port_in_use_is_one_clear_line(tmp_path, tiny_model_dir):
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = VllmServer(ServerSpec(tiny_model_dir, "clean"), tmp_path / "log.txt", port=port)
        with pytest.raises(ServerError, match=f"port {port} on 127.0.0.1 is in use"), server:
            pass
    assert not (tmp_path / "log.txt").exists()


def test_missing_adapter_is_reported_before_start(tmp_path, tiny_model_dir):
    spec = ServerSpec(tiny_model_dir, "clean", loras=[LoraModule("corrupt", tmp_path / "no", 8)])
    with (
        pytest.raises(ServerError, match=r"has no adapter_config\.json"),
        VllmServer(spec, tmp_path / "l"),
    ):
        pass


def test_command_binds_localhost_and_sizes_the_cpu_kv_cache():
    spec = ServerSpec(
        "m",
        "clean",
        ServeConfig(kv_cache_gb=1.5, max_model_len=512),
        loras=[LoraModule("a", Path("/a"), 8), LoraModule("b", Path("/b"), 16)],
    )
    cmd = server_command(spec, 8123, gpu=False)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--kv-cache-memory-bytes") + 1] == str(int(1.5 * 2**30))
    assert cmd[cmd.index("--max-lora-rank") + 1] == "16"
    assert cmd[-2:] == ["a=/a", "b=/b"]
    assert "--trust-remote-code" not in cmd
    gpu_cmd = server_command(spec, 8123, gpu=True)
    assert "--gpu-memory-utilization" in gpu_cmd and "--kv-cache-memory-bytes" not in gpu_cmd
    assert "--enforce-eager" not in cmd  # LoRA engines: vLLM's own mode
    assert "--enforce-eager" in server_command(ServerSpec("m", "clean"), 8123, gpu=False)


def process_group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.vllm
def test_server_failing_to_start_reports_log_tail(tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    spec = ServerSpec(broken, "clean", ServeConfig(startup_timeout_s=300))
    with pytest.raises(ServerError) as info, VllmServer(spec, tmp_path / "log.txt"):
        pass
    first, *tail = str(info.value).splitlines()
    assert first.startswith("vLLM server exited with code") and "last lines:" in first
    assert tail, "the server log tail is part of the message"


@pytest.mark.slow
@pytest.mark.vllm
def test_real_server_generates_then_stops_completely(tmp_path, tiny_model_dir):
    spec = ServerSpec(tiny_model_dir, "clean", ServeConfig(dtype="float32", kv_cache_gb=0.5))
    with VllmServer(spec, tmp_path / "log.txt") as server:
        pgid = server.process.pid
        body = json.dumps({"model": "clean", "prompt": "Solve for x", "max_tokens": 4,
                           "temperature": 0}).encode()  # fmt: skip
        request = urllib.request.Request(
            f"{server.base_url}/completions", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.load(response)
        assert answer["usage"]["completion_tokens"] == 4
    assert not process_group_alive(pgid), "engine processes outlived the server"
