"""Profiles belong to a hardware kind: a data directory profiled on another kind of machine is not
trusted here; its variants are profiled again, in the background, for this machine's kind."""

import pytest

from infaas.app import BackgroundServer
from infaas.client import Client
from infaas.hardware import local_kind
from infaas.registry import Registry
from infaas.settings import Settings
from tests.conftest import copy_data_dir, wait_until

pytestmark = pytest.mark.slow
OTHER = "x86_64.amd-epyc-7b13.avx2"


@pytest.fixture
def moved(tmp_path, digits_profiled_dir):
    """The profiled digits zoo as if it had been profiled on an AVX2-only EPYC: one architecture kept."""
    data = copy_data_dir(digits_profiled_dir, tmp_path / "d")
    registry = Registry.open(data)
    for arch in registry.architectures():
        if arch.name != "digits-logreg":
            registry.remove(arch.name)
    here = local_kind().id
    with registry.store.transaction():
        for p in registry.profiles():
            registry.store.delete("profile", f"{p.variant}@{here}")
            registry.put_profile(p.model_copy(update={"hardware": OTHER}))
    registry.close()
    return data


def test_profiles_of_another_kind_are_not_used_and_this_kind_is_profiled(moved):
    server = BackgroundServer(Settings(data_dir=moved, port=0, workers=1)).start()
    try:
        with Client(server.url) as c:
            variants = c.variants("digits-logreg")
            pending = [v for v in variants if v["status"] == "pending"]
            assert pending and all(f"profiled on {OTHER} only" in v["reason"] for v in pending)
            assert all(v["profile"] is None for v in variants)  # the EPYC's numbers are not shown as ours
            decisions = c.decisions()
            assert any(
                d["kind"] == "profile" and "no profiles for this machine's hardware kind" in d["reason"]
                for d in decisions
            )
            assert wait_until(
                lambda: all(v["profile"] is not None for v in c.variants("digits-logreg") if v["status"] != "failed"),
                timeout=180,
            )
            for v in c.variants("digits-logreg"):
                if v["profile"] is not None:
                    assert v["profile"]["hardware"] == local_kind().id and v["status"] in ("ready", "rejected")
            workers = c.workers()
            assert workers and all(w["kind"] == local_kind().id for w in workers)
            assert c.server_metadata()["hardware"]["flags"] == list(local_kind().flags)
    finally:
        server.stop()
    registry = Registry.open(moved)  # both kinds' profiles are kept in the store, side by side
    kinds = {p.hardware for p in registry.profiles()}
    registry.close()
    assert kinds == {OTHER, local_kind().id}
