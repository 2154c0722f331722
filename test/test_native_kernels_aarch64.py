"""The compiled kernels on aarch64: cross-compiled, run under qemu-aarch64, compared with torch on the host.

The cells run their compiled paths unchanged on ``aarch64_kernels.QemuKernels`` (the portable C the compiler
vectorises for NEON), and torch computes the references here. Sizes are small (the emulator is slow) but have
tails in every dimension the vector code splits.
"""

import subprocess

import aarch64_kernels
import numpy as np
import pytest
import torch

from liquid_control.cells import AutoNCP, CfCCell, LiquidRNN, LTCCell, kernels, native

pytestmark = pytest.mark.skipif(
    not aarch64_kernels.tools_available(),
    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user; "
    "scripts/bootstrap.sh test installs them when run as root)",
)


@pytest.fixture(scope="module")
def aarch64(tmp_path_factory):
    driver = aarch64_kernels.build_driver(tmp_path_factory.mktemp("aarch64"))
    lib = aarch64_kernels.QemuKernels(driver)
    yield lib
    lib.close()


@pytest.fixture
def on_aarch64(aarch64, monkeypatch):
    monkeypatch.setattr(native, "load", lambda: aarch64)
    return aarch64


def test_the_driver_is_aarch64_code_vectorised_with_neon(aarch64):
    assert aarch64.isa == "portable"
    header = aarch64.path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # e_machine: EM_AARCH64
    disassembly = subprocess.run(
        ["aarch64-linux-gnu-objdump", "-d", "--no-show-raw-insn", str(aarch64.path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "fmla\tv" in disassembly and ".4s" in disassembly  # 4-lane float multiply-adds: NEON


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exp_and_matrix_product_on_aarch64(aarch64, dtype):
    lo, hi = (-87.0, 88.0) if dtype == torch.float32 else (-708.0, 708.0)
    x = torch.linspace(lo, hi, 4001, dtype=dtype)
    y = torch.empty_like(x)
    aarch64.function("liquid_exp", dtype)(n=x.numel(), x=x, y=y)
    ulp = np.abs(y.numpy() - np.exp(x.numpy().astype(np.float64))) / np.exp(x.numpy().astype(np.float64))
    assert (ulp / torch.finfo(dtype).eps).max() <= 2.0
    g = torch.Generator().manual_seed(0)
    for M, N, K in ((3, 5, 7), (9, 37, 20), (17, 64, 3)):
        for trans_a in (0, 1):
            a = torch.randn((K, M) if trans_a else (M, K), generator=g, dtype=dtype)
            b = torch.randn(K, N + 3, generator=g, dtype=dtype)
            c0 = torch.randn(M, N, generator=g, dtype=dtype)
            c = c0.clone()
            aarch64.function("liquid_mm", dtype)(
                trans_a=trans_a, M=M, N=N, K=K, A=a, lda=a.shape[1], B=b, ldb=N + 3, accumulate=1, C=c, ldc=N
            )
            tol = 1e-4 if dtype == torch.float32 else 1e-12
            torch.testing.assert_close(c, (a.t() if trans_a else a) @ b[:, :N] + c0, atol=tol * K**0.5, rtol=tol)


def _outputs_and_gradients(cell, x, dt, h0, mask):
    tensors = [x, dt, h0] + list(cell.parameters())
    for tensor in tensors:
        tensor.grad = None
        tensor.requires_grad_()
    out, h_n = LiquidRNN(cell)(x, dt, h0=h0, mask=mask)
    (out.sin().sum() + h_n.pow(2).sum()).backward()
    return [out.detach(), h_n.detach()] + [t.grad.clone() for t in tensors]


CELLS = {
    "cfc_default": lambda: CfCCell(6, 5, backbone_units=19),
    "cfc_no_gate_relu_2layers": lambda: CfCCell(
        6, 5, mode="no_gate", backbone_units=19, backbone_layers=2, activation="relu"
    ),
    "cfc_ncp_pure": lambda: CfCCell(6, AutoNCP(9, 2, seed=1), mode="pure"),
    "ltc": lambda: LTCCell(6, 5, substeps=3),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", CELLS)
def test_sequences_forward_and_backward_on_aarch64_match_torch(kind, dtype, on_aarch64, monkeypatch):
    torch.manual_seed(1)
    cell = CELLS[kind]().to(dtype)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 7, 6, generator=g, dtype=dtype)
    dt = 0.05 + 0.5 * torch.rand(5, 7, generator=g, dtype=dtype)
    h0 = torch.randn(5, cell.state_size, generator=g, dtype=dtype)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2, 4:] = False
    with kernels.recording() as ran:
        got = _outputs_and_gradients(cell, x, dt, h0, mask)
    assert {b for _, p, b in ran if p == "sequence"} == {"compiled"}
    monkeypatch.setattr(native, "load", lambda: None)
    expected = _outputs_and_gradients(cell, x, dt, h0, mask)
    tol = dict(atol=2e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-10, rtol=1e-9)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("kind", CELLS)
def test_streaming_steps_on_aarch64_match_torch(kind, on_aarch64):
    torch.manual_seed(2)
    cell = CELLS[kind]().eval()
    g = torch.Generator().manual_seed(4)
    x, dt = torch.randn(3, 4, 6, generator=g), 0.05 + 0.5 * torch.rand(3, 4, generator=g)
    state_kernel = state_torch = None
    for t in range(4):
        with torch.no_grad(), kernels.recording() as ran:
            state_kernel = cell.step(x[:, t], state_kernel, dt[:, t])
        assert ran == [(cell.core_type, "step", "compiled")]
        state_torch = cell.step(x[:, t], state_torch, dt[:, t])  # grad enabled: the stepwise graph
        torch.testing.assert_close(state_kernel, state_torch.detach(), atol=1e-5, rtol=1e-5)
