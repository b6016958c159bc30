import json

from infaas.settings import load_settings


def test_precedence_file_then_env_then_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"port": 9000, "workers": 3, "data_dir": str(tmp_path / "f")}))
    monkeypatch.delenv("INFAAS_PORT", raising=False)
    monkeypatch.setenv("INFAAS_WORKERS", "2")
    s = load_settings(cfg)
    assert (s.port, s.workers, str(s.data_dir)) == (9000, 2, str(tmp_path / "f"))
    s = load_settings(cfg, workers=5, port=None)
    assert (s.port, s.workers) == (9000, 5)
