import json

import pytest

from infaas.settings import Settings, load_settings


def test_precedence_file_then_env_then_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"port": 9000, "workers": 3, "data_dir": str(tmp_path / "f")}))
    monkeypatch.delenv("INFAAS_PORT", raising=False)
    monkeypatch.setenv("INFAAS_WORKERS", "2")
    s = load_settings(cfg)
    assert (s.port, s.workers, str(s.data_dir)) == (9000, 2, str(tmp_path / "f"))
    s = load_settings(cfg, workers=5, port=None)
    assert (s.port, s.workers) == (9000, 5)


def test_runtimes_are_named_from_a_list_and_checked(monkeypatch):
    from infaas.registry.types import runtime_of

    assert Settings().runtimes == ["onnxruntime", "openvino", "pytorch"]
    monkeypatch.setenv("INFAAS_RUNTIMES", "onnxruntime")
    assert Settings().runtimes == ["onnxruntime"]
    with pytest.raises(ValueError, match="unknown runtime"):
        Settings(runtimes="onnxruntime,tensorflow")
    # a variant's format names its runtime and how that runtime loads it
    assert runtime_of("onnx-int8-static") == ("onnxruntime", {})
    assert runtime_of("ov-bf16") == ("openvino", {"precision": "bf16"})
    assert runtime_of("pt-bf16") == ("pytorch", {"precision": "bf16"})
    assert runtime_of("ov-fp32") == ("openvino", {"precision": "f32"})
