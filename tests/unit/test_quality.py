"""Quality estimates and their intervals, hardware kinds, synthesized inputs (pure; no processes)."""

import numpy as np
import pytest

from infaas.hardware import HardwareKind, parse_cpuinfo
from infaas.profiler import quality as Q


def test_wilson_matches_the_textbook_values():
    lo, hi = Q.wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = Q.wilson(81, 263)  # Newcombe (1998), example interval 0.2553-0.3662
    assert lo == pytest.approx(0.2553, abs=2e-4) and hi == pytest.approx(0.3662, abs=2e-4)
    assert Q.wilson(5, 0) == (0.0, 1.0)


def test_measured_top1_pairs_the_rows():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 2000)
    parent = np.where(rng.random(2000) < 0.9, labels, (labels + 1) % 10)
    variant = parent.copy()
    flip = np.flatnonzero(parent == labels)[:20]  # 20 of the parent's right answers go wrong: loss 0.01
    variant[flip] = (labels[flip] + 3) % 10
    q = Q.top1_measured(variant, parent, labels)
    assert q.samples == 2000 and q.loss == pytest.approx(0.01)
    assert q.low < q.value < q.high and q.high - q.low < 0.03  # Wilson on 2000 rows
    # paired: the bound is far tighter than two independent accuracies would give (0.0137 vs ~0.03)
    assert 0.01 < q.loss_high < 0.015 and q.within(0.02) and not q.within(0.01)
    same = Q.top1_measured(parent, parent, labels)
    assert same.loss == 0 and 0 < same.loss_high < 0.001  # no change seen: bounded, not zero


def test_estimated_top1_weighs_changes_by_the_parents_probabilities():
    n = 1000
    classes = np.tile(np.arange(5), (n, 1))
    probs = np.tile(np.array([0.40, 0.38, 0.1, 0.07, 0.05]), (n, 1))
    parent = np.zeros(n, int)
    variant = parent.copy()
    variant[:100] = 1  # 10 % of answers change, each between two near-equal classes: 0.02 x 0.1 = 0.002
    q = Q.top1_estimated(variant, (classes, probs), parent, 0.75)
    assert q.loss == pytest.approx(0.002) and q.value == pytest.approx(0.748) and q.samples == n
    assert q.within(0.02) and q.agreement == pytest.approx(0.9)
    confident = np.tile(np.array([0.95, 0.02, 0.01, 0.01, 0.01]), (n, 1))
    worse = Q.top1_estimated(variant, (classes, confident), parent, 0.75)
    assert worse.loss == pytest.approx(0.093) and not worse.within(0.02)
    outside = variant.copy()
    outside[:100] = 7  # not in the parent's top 5: the parent's whole probability is lost
    assert Q.top1_estimated(outside, (classes, probs), parent, 0.75).loss == pytest.approx(0.04)
    assert Q.top1_estimated(variant, None, parent, 0.75).loss == pytest.approx(0.1)  # no scores: whole answers


def test_fidelity_cosine_and_relative_l2():
    rng = np.random.default_rng(1)
    parent = [rng.standard_normal((500, 8, 16)).astype(np.float32), rng.standard_normal((500, 16)).astype(np.float32)]
    noisy = [p + 0.01 * rng.standard_normal(p.shape).astype(np.float32) for p in parent]
    q = Q.fidelity(noisy, parent, "cosine")
    assert 0.999 < q.value < 1.0 and q.low <= q.value <= q.high and q.samples == 500 and q.within(0.001)
    r = Q.fidelity(noisy, parent, "rel-l2")
    assert r.value == pytest.approx(0.99, abs=0.002)
    assert Q.fidelity(parent, parent, "cosine").loss == pytest.approx(0, abs=1e-9)
    bad = Q.fidelity([-p for p in parent], parent, "cosine")
    assert bad.value == pytest.approx(-1.0) and not bad.within(0.5)
    with pytest.raises(ValueError):
        Q.fidelity(parent, parent, "top1")


def test_hardware_kind_from_cpuinfo():
    epyc = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\n\nprocessor\t: 1\n"
    kind = parse_cpuinfo(epyc, "x86_64")
    assert kind.flags == ("avx2",) and kind.id == "x86_64.amd-epyc-7b13.avx2"
    spr = "model name : Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\nflags : avx2 avx512f avx512_vnni amx_int8 amx_tile\n"
    kind = parse_cpuinfo(spr, "x86_64")
    assert kind.id == "x86_64.intel-xeon-platinum-8481c.avx2-avx512f-avx512_vnni-amx"
    assert kind.for_provider("cuda") == kind.id  # no GPU on this kind
    arm = "processor : 0\nFeatures : fp asimd asimddp i8mm\nCPU implementer : 0x41\nCPU part : 0xd0c\n"
    assert parse_cpuinfo(arm, "aarch64").id == "aarch64.arm-0x41-0xd0c.asimd-asimddp-i8mm"
    gpu = HardwareKind("x86_64", "AMD EPYC 7B13", ("avx2",), "NVIDIA H100 80GB HBM3")
    assert gpu.for_provider("cpu") == "x86_64.amd-epyc-7b13.avx2"
    assert gpu.for_provider("cuda") == "x86_64.amd-epyc-7b13.avx2.nvidia-h100-80gb-hbm3"


def test_the_gpu_model_is_asked_of_the_driver_whichever_runtime_uses_it(tmp_path, monkeypatch):
    """A machine whose only CUDA runtime is PyTorch still names its GPU (nvidia-smi, no runtime
    imported); without the tool and without ORT's CUDA provider there is no GPU in the kind."""
    from infaas import hardware

    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\necho "NVIDIA H200"\necho "NVIDIA H200"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert hardware._gpu() == "NVIDIA H200"
    smi.write_text("#!/bin/sh\nexit 9\n")  # a driver that answers with an error: no name from it
    assert hardware._gpu() in ("", "cuda-gpu")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    import onnxruntime

    expected = "cuda-gpu" if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else ""
    assert hardware._gpu() == expected
