"""Which INT8 weights a CPU kind gets from NNCF: 7-bit in every layer where x86's INT8 kernels
saturate (no VNNI), NNCF's default elsewhere."""

from __future__ import annotations

import pytest

from infaas.hardware import parse_cpuinfo
from infaas.variants.quantize import nncf_overflow_fix


@pytest.mark.parametrize(
    ("machine", "flags", "fix"),
    [
        ("x86_64", "fpu sse2 avx avx2 fma", "enable"),  # AVX2 only (Zen 1-3, Haswell…Broadwell)
        ("x86_64", "avx2 avx512f avx512bw", "enable"),  # AVX-512 without VNNI (Skylake-SP)
        ("x86_64", "avx2 avx512f avx512_vnni", "first_layer_only"),  # Cascade Lake, Zen 4
        ("x86_64", "avx2 avx_vnni", "first_layer_only"),  # Alder Lake
        ("x86_64", "avx2 avx512f avx512_vnni amx_int8 amx_tile", "first_layer_only"),  # Sapphire Rapids
        ("aarch64", "fp asimd asimddp", "first_layer_only"),  # Arm: no VPMADDUBSW
    ],
)
def test_the_overflow_fix_follows_the_kinds_int8_instructions(machine, flags, fix):
    kind = parse_cpuinfo(f"model name\t: some cpu\nflags\t\t: {flags}\n", machine)
    chosen, why = nncf_overflow_fix(kind)
    assert chosen == fix and why
    assert ("7-bit" in why) == (fix == "enable")


def test_a_kind_says_whether_it_has_vnni_and_native_bf16():
    def kind(flags: str, machine: str = "x86_64"):
        return parse_cpuinfo(f"model name\t: some cpu\nflags\t\t: {flags}\n", machine)

    assert not kind("avx2").vnni and not kind("avx2").bf16
    assert kind("avx2 avx512f avx512_vnni").vnni and not kind("avx2 avx512f avx512_vnni").bf16
    assert kind("avx2 avx512_vnni avx512_bf16").bf16
    assert kind("avx2 amx_int8").vnni and kind("avx2 amx_int8").bf16
    assert kind("fp asimd bf16", "aarch64").bf16 and not kind("fp asimd bf16", "aarch64").vnni
