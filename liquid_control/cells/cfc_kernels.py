"""The CfC kernels behind the dispatcher (``kernels.py``): ``compiled`` (C), ``torch`` and ``numpy``.

All three compute the update in one algebra, the fused form, and are tested against the reference graph
``CfCBlock.recur`` (ncps's formulas): activations are ``alpha g(k u) + beta`` (``activations.py``); for the
gated modes, with ``z = [ff1 | ff2 | time_a | time_b]`` the heads' pre-activations,

    s1 = sigmoid(2 ff1), s2 = sigmoid(2 ff2), gate = sigmoid(time_b + time_a t)
    tanh(ff) = 2 s - 1;  default: h' = tanh1 + gate (tanh2 - tanh1);  no_gate: h' = tanh1 + gate tanh2

and for ``pure``: ``h' = A - A exp(-t (|w_tau| + |z|)) z``.

Why a fused form: on a CPU, autograd over the step-by-step graph is dominated by per-op overhead (~25 small
nodes per step), not arithmetic; ``tanh`` is ~10x slower than ``sigmoid`` in torch 2.13 on this machine.

- ``CompiledCfC`` (``native/cfc.inc``): both time loops, the input projection, the activations, every step's
  local Jacobian and the weight gradients (products over ~256-row chunks of B*T) in C, one call forward and one
  backward per block; and the streaming step, one C call per block on weights copied (transposed) once.
- ``TorchCfC``: the same sequence in torch with a hand-written backward. The forward runs 7 ops per step into
  preallocated buffers; each step's local Jacobian (a diagonal per unit: time_a, ff1, ff2, time_b) is formed
  afterwards for ALL steps in a few batched ops; the backward loop is 4 ops per step; every weight gradient is
  ONE matmul over all B*T rows. Weights are re-expressed (differentiably) for it by ``fused_weights``.
- ``NumpyCfC``: the streaming step in numpy (no compiler), the algebra of ``cfc.inc``.

Sequences run block by block (an NCP wiring's layers): block l's input at step t is block l-1's new state at
step t, so each block is one fused autograd node over the whole sequence.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from . import native
from .activations import FAMILY_CODES, activation, np_sigmoid
from .kernels import FusedSequence, Kernel, native_kernels, needs_grad

# how the compiled kernel (native/cfc.inc) numbers the modes
KERNEL_MODES = {"default": 0, "no_gate": 1, "pure": 2}


def fusable(core, dtype: torch.dtype) -> bool:
    """Every block has a fused activation, no dropout is active, and the weights are CPU tensors of ``dtype``."""
    return (
        all(activation(b.activation_name).family is not None for b in core.blocks)
        and not (core.training and any(b.dropout is not None for b in core.blocks))
        and all(p.dtype == dtype and p.device.type == "cpu" for p in core.parameters())
    )


def _form(block):
    act = activation(block.activation_name)
    return act.family, act.k, act.alpha, act.beta


# ---- compiled ------------------------------------------------------------------------------------------
class CompiledCfC(Kernel):
    """``native/cfc.inc``: sequence forward/backward and the streaming step (see the module docstring)."""

    backend = "compiled"

    @classmethod
    def supports(cls, core, dtype, purpose):
        """The compiled library is loaded and the core is ``fusable`` in ``dtype``."""
        return native_kernels() is not None and fusable(core, dtype)

    def __init__(self, core, dtype, purpose):
        super().__init__(core, dtype, purpose)
        self.native = native_kernels()
        if purpose == "step":
            if len(core.blocks) == 1:
                self._step = _CompiledBlockStep(self.native, core.blocks[0], core.step_context()[0], dtype)
            else:  # a wiring's layers (no backbone): one C call for all blocks
                self._step = _CompiledWiredStep(self.native, core, dtype)

    def step(self, x, state, dt):
        """The streaming update in one C call (a wiring's blocks included), on weights copied once."""
        return self._step(x.contiguous(), state.contiguous(), dt.contiguous())

    def sequence(self, x, state, dt, keep):
        """The blocks' sequences in C, one forward and one backward call per block."""
        keep_u8 = keep.to(torch.uint8).contiguous() if keep is not None else None
        return _blockwise(self.core, x, state, lambda b, c, i, h: self._block(b, c, i, h, dt, keep_u8))

    def _block(self, block, ctx, x, h0, ts, keep_u8):
        weights = [t for layer in block.backbone[1:] for t in (layer.weight, layer.bias)]
        if block.backbone:
            weights += [ctx["heads"], block.head_bias]
        if block.mode == "pure":
            weights += [block.w_tau, block.A]
        first = (
            (block.backbone[0].weight, block.backbone[0].bias) if block.backbone else (ctx["heads"], block.head_bias)
        )
        part = _CompiledBlockSequence(self.native, block, needs_grad(x, h0, ts, *first, *weights))
        return FusedSequence.apply(part, x, h0, ts, keep_u8, *first, *weights).transpose(0, 1)


def _contexts(core):
    return zip(core.blocks, core.step_context())


def _blockwise(core, x, state, run_block):
    """Run ``run_block(block, ctx, inputs, h0)`` block by block; states (B, T, S) concatenated in layer order."""
    ctx = core.step_context()
    if len(core.blocks) == 1:
        return run_block(core.blocks[0], ctx[0], x, state)
    states, inputs = [], x
    for block, h0, block_ctx in zip(core.blocks, torch.split(state, core.layer_sizes, dim=1), ctx):
        inputs = run_block(block, block_ctx, inputs, h0)
        states.append(inputs)
    return torch.cat(states, dim=-1)


def transposed(matrices):
    """Contiguous W^T of each weight: the compiled forward multiplies by W^T row-major (``native/cfc.inc``)."""
    return [m.detach().t().contiguous() for m in matrices]


class _CompiledBlockSequence:
    """One block's sequence on the compiled kernels, on the block's own weights (``FusedSequence`` part).

    Inputs: ``x`` (B, T, I); ``h0``; ``ts`` (B, T); ``keep_u8`` (B, T) or None; the first linear map ``(W, b)``
    (W over ``[x | h]``); then ``(W_k, b_k)`` for backbone layers 2..L, ``(heads, head_bias)`` if L > 0,
    ``(w_tau, A)`` in ``pure`` mode. The kernel computes the true activations and ``tanh`` itself, so no
    weight is reordered; the forward takes ``W^T`` of the weights it multiplies by (``transposed``)."""

    def __init__(self, lib, block, need_grad: bool):
        self.lib, self.mode, self.layers, self.need_grad = lib, block.mode, len(block.backbone), need_grad
        self.family, self.k, self.alpha, self.beta = _form(block)

    def forward(self, ctx, x, h0, ts, keep_u8, first_w, first_b, *weights):
        layers, mode = self.layers, KERNEL_MODES[self.mode]
        batch, steps, features = x.shape
        H = h0.shape[1]
        units = first_w.shape[0] if layers else 0
        Z = H if mode == 2 else 4 * H
        x_tb = x.detach().transpose(0, 1).contiguous()
        h0, ts, first_w, first_b = (t.detach().contiguous() for t in (h0, ts, first_w, first_b))
        weights = [w.detach().contiguous() for w in weights]
        layer_wT, layer_b = transposed(weights[0 : 2 * layers - 2 : 2]), weights[1 : 2 * layers - 2 : 2]
        headT, head_b = (transposed([weights[2 * layers - 2]])[0], weights[2 * layers - 1]) if layers else (None, None)
        new = h0.new_empty
        history = new(steps + 1, batch, H)
        g_out = [new(steps, batch, units) for _ in range(layers)]
        need_grad = self.need_grad
        jac = new(steps, batch, Z) if need_grad else None
        aux = new((3 if mode == 2 else 1) * steps, batch, H) if need_grad else None
        slopes = [new(steps, batch, units) for _ in range(layers)] if need_grad else None
        wxT, whT = transposed([first_w[:, :features], first_w[:, features:]])
        self.lib.function("cfc_forward", h0.dtype)(
            B=batch,
            T=steps,
            H=H,
            U=units,
            L=layers,
            I=features,
            mode=mode,
            act=FAMILY_CODES[self.family],
            k=self.k,
            alpha=self.alpha,
            beta=self.beta,
            x_tb=x_tb,
            h0=h0,
            ts=ts,
            keep=keep_u8,
            wxT=wxT,
            whT=whT,
            first_b=first_b,
            layer_wT=layer_wT,
            layer_b=layer_b,
            headT=headT,
            head_b=head_b,
            w_tau=weights[-2] if mode == 2 else None,
            amp=weights[-1] if mode == 2 else None,
            history=history,
            g_out=g_out,
            jac=jac,
            aux=aux,
            slopes=slopes,
            work=new(self.lib.function("cfc_forward_work_size")(B=batch, T=steps, H=H, U=units, L=layers, mode=mode)),
        )
        if need_grad:
            ctx.n_weights, ctx.has_keep = len(weights), keep_u8 is not None
            ctx.save_for_backward(
                x_tb,
                history,
                keep_u8 if keep_u8 is not None else ts.new_empty(0),
                first_w,
                jac,
                aux,
                *weights,
                *slopes,
                *g_out,
            )
        return history[1:]

    def backward(self, ctx, grad_states):
        layers, mode = self.layers, KERNEL_MODES[self.mode]
        saved, n = ctx.saved_tensors, ctx.n_weights
        x_tb, history, keep_u8, first_w, jac, aux = saved[:6]
        weights = saved[6 : 6 + n]
        slopes, g_out = saved[6 + n : 6 + n + layers], saved[6 + n + layers :]
        steps, batch, H = grad_states.shape
        features = x_tb.shape[-1]
        units = first_w.shape[0] if layers else 0
        new = history.new_empty
        d_u = [new(steps, batch, units) for _ in range(layers)]
        d_ts, d_h0 = new(batch, steps), new(batch, H)
        d_x_tb = new(steps, batch, features) if ctx.needs_input_grad[1] else None
        d_first_w, d_first_b = torch.empty_like(first_w), new(first_w.shape[0])
        d_layers = [torch.empty_like(w) for w in weights[: 2 * layers - 2]] if layers else []
        d_head = [torch.empty_like(w) for w in weights[2 * layers - 2 : 2 * layers]] if layers else [None, None]
        d_pure = new(2, H) if mode == 2 else None
        self.lib.function("cfc_backward", history.dtype)(
            B=batch,
            T=steps,
            H=H,
            U=units,
            L=layers,
            I=features,
            mode=mode,
            grad=grad_states.contiguous(),
            keep=keep_u8 if ctx.has_keep else None,
            x_tb=x_tb,
            history=history,
            first_w=first_w,
            layer_w=list(weights[0 : 2 * layers - 2 : 2]),
            head_w=weights[2 * layers - 2] if layers else None,
            jac=jac,
            aux=aux,
            slopes=list(slopes),
            g_out=list(g_out),
            d_z=torch.empty_like(jac),
            d_u=d_u,
            d_ts=d_ts,
            d_h0=d_h0,
            d_x_tb=d_x_tb,
            d_first_w=d_first_w,
            d_first_b=d_first_b,
            d_layer_w=d_layers[0::2],
            d_layer_b=d_layers[1::2],
            d_head_w=d_head[0],
            d_head_b=d_head[1],
            d_pure=d_pure,
            work=new(batch * (2 * H + units)),
        )
        d_weights = [d_first_w, d_first_b, *d_layers] + (d_head if layers else [])
        if mode == 2:
            w_tau, amp = weights[-2], weights[-1]
            d_weights += [d_pure[0].reshape(w_tau.shape) * torch.sign(w_tau), d_pure[1].reshape(amp.shape)]
        d_x = d_x_tb.transpose(0, 1) if d_x_tb is not None else None
        return d_x, d_h0, d_ts, None, *d_weights


class _CompiledBlockStep:
    """One block's streaming step: ``native/cfc.inc``'s ``cfc_step`` with the weights bound once (copies,
    transposed where the kernel multiplies by W^T: the kernel never sees the parameters themselves)."""

    def __init__(self, lib, block, ctx, dtype):
        H, L, n_in = block.hidden, len(block.backbone), block.in_features
        units = block.backbone[0].out_features if L else 0
        first_w, first_b = (block.backbone[0].weight, block.backbone[0].bias) if L else (ctx["heads"], block.head_bias)

        def copy(t):
            return None if t is None else t.detach().to(dtype).contiguous().clone()

        family, k, alpha, beta = _form(block)
        mode = KERNEL_MODES[block.mode]
        self.hidden, self.dtype = H, dtype
        self.work_numel = {}  # batch -> scratch elements
        self.work_size = lambda batch: lib.function("cfc_forward_work_size")(B=batch, T=1, H=H, U=units, L=L, mode=mode)
        self.scratch = native.StepScratch()
        self.call = lib.function("cfc_step", dtype).bind(
            H=H,
            U=units,
            L=L,
            I=n_in,
            mode=mode,
            act=FAMILY_CODES[family],
            k=k,
            alpha=alpha,
            beta=beta,
            wxT=copy(first_w[:, :n_in].t()),
            whT=copy(first_w[:, n_in:].t()),
            first_b=copy(first_b),
            layer_wT=[copy(layer.weight.t()) for layer in block.backbone[1:]],
            layer_b=[copy(layer.bias) for layer in block.backbone[1:]],
            headT=copy(ctx["heads"].t()) if L else None,
            head_b=copy(block.head_bias) if L else None,
            w_tau=copy(block.w_tau) if block.mode == "pure" else None,
            amp=copy(block.A) if block.mode == "pure" else None,
        )

    def __call__(self, x, h, dt):
        batch = x.shape[0]
        numel = self.work_numel.get(batch)
        if numel is None:
            numel = self.work_numel[batch] = 2 * batch * self.hidden + self.work_size(batch)
        out = torch.empty(batch, self.hidden, dtype=self.dtype)
        work = self.scratch.get(numel, self.dtype)
        # x, h, dt: contiguous tensors of this dtype (CompiledCfC.step, RecurrentCore.advance checked them)
        self.call.unchecked(B=batch, x=x, state=h, dt=dt, out=out, work=work)
        return out


class _CompiledWiredStep:
    """A wired CfC's streaming step: ``native/cfc.inc``'s ``cfc_step_blocks``, every block in one call, with
    each block's weights copied (and transposed) once."""

    def __init__(self, lib, core, dtype):
        blocks, contexts = core.blocks, core.step_context()

        def copy(t):
            return t.detach().to(dtype).contiguous().clone()

        pure = core.mode == "pure"
        self.state_size, self.dtype = core.state_size, dtype
        self.widest = max(core.layer_sizes)
        self.scratch = native.StepScratch()
        self.call = lib.function("cfc_step_blocks", dtype).bind(
            blocks=len(blocks),
            I=core.input_size,
            S=core.state_size,
            sizes=torch.tensor(core.layer_sizes, dtype=torch.int32),
            mode=KERNEL_MODES[core.mode],
            wxT=[copy(c["heads"][:, : b.in_features].t()) for b, c in zip(blocks, contexts)],
            whT=[copy(c["heads"][:, b.in_features :].t()) for b, c in zip(blocks, contexts)],
            first_b=[copy(b.head_bias) for b in blocks],
            w_tau=[copy(b.w_tau) for b in blocks] if pure else None,
            amp=[copy(b.A) for b in blocks] if pure else None,
        )

    def __call__(self, x, h, dt):
        batch = x.shape[0]
        out = torch.empty(batch, self.state_size, dtype=self.dtype)
        work = self.scratch.get(13 * batch * self.widest, self.dtype)  # cfc_step_blocks: 13 B W
        self.call.unchecked(B=batch, x=x, state=h, dt=dt, out=out, work=work)
        return out


# ---- torch ---------------------------------------------------------------------------------------------
class TorchCfC(Kernel):
    """The fused sequence in torch with a hand-written backward (``_TorchBlockSequence``)."""

    backend = "torch"

    @classmethod
    def supports(cls, core, dtype, purpose):
        """Sequences only, for a ``fusable`` core."""
        return purpose == "sequence" and fusable(core, dtype)

    def sequence(self, x, state, dt, keep):
        """The blocks' sequences in torch, each one autograd node with a hand-written backward."""
        return _blockwise(self.core, x, state, lambda b, c, i, h: self._block(b, c, i, h, dt, keep))

    @staticmethod
    def _block(block, ctx, x, h0, ts, keep):
        w_x, w_hT, b, weights = fused_weights(block, ctx)
        if block.mode == "pure":
            weights += [block.w_tau, block.A]
        px = nn.functional.linear(x, w_x, b)
        part = _TorchBlockSequence(block, needs_grad(px, h0, ts, w_hT, *weights))
        return FusedSequence.apply(part, px, h0, ts, keep, w_hT, *weights).transpose(0, 1)


def _g(kind: str, u: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    if kind == "sigmoid":
        return torch.sigmoid(u, out=out)
    if kind == "relu":
        return torch.clamp_min(u, 0.0, out=out)
    return out.copy_(torch.nn.functional.silu(u))


def _g_slope(kind: str, u: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """dg/du from g's input ``u`` and output ``out`` (batched over all steps)."""
    if kind == "sigmoid":
        return out - out * out
    if kind == "relu":
        return (u > 0).to(u.dtype)
    s = torch.sigmoid(u)
    return s * (1.0 + u * (1.0 - s))


def fused_weights(block, ctx):
    """A block's weights re-expressed for ``_TorchBlockSequence`` (differentiably, so autograd maps gradients
    back): biases shifted by ``beta * rowsum(W)`` (the consumer matmul applies ``alpha``, so ``g`` alone is
    stored); for the gated modes the heads reordered to ``[time_a, ff1, ff2, time_b]`` with the ff rows doubled
    (tanh via sigmoid). Returns ``(w_x, w_hT, b, weights)`` for the first linear map and the remaining layers."""
    beta = activation(block.activation_name).beta
    heads, head_bias, w_x, w_hT, b = ctx["heads"], block.head_bias, ctx["w_x"], ctx["w_hT"], ctx["b"]
    weights = []
    for layer in block.backbone[1:]:
        weights += [layer.weight, layer.bias + beta * layer.weight.sum(1) if beta else layer.bias]
    if block.mode == "pure":
        order = scale = None
    else:
        H = block.hidden
        order = torch.cat([torch.arange(2 * H, 3 * H), torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H)])
        scale = heads.new_ones(4 * H)
        scale[H : 3 * H] = 2.0
    if block.backbone:
        head_b = head_bias + beta * heads.sum(1) if beta else head_bias
        if order is not None:
            heads, head_b = heads[order] * scale[:, None], head_b[order] * scale
        weights += [heads, head_b]
    elif order is not None:
        w_x, w_hT, b = w_x[order] * scale[:, None], w_hT[:, order] * scale, b[order] * scale
    return w_x, w_hT, b, weights


class _TorchBlockSequence:
    """states (T, B, H) of one block (``FusedSequence`` part; see the module docstring).

    Inputs: ``px`` (B, T, F) input part of the first linear map (bias included); ``h0`` (B, H); ``ts`` (B, T);
    ``keep`` (B, T) bool or None; ``w_hT`` (H, F); then ``(W_k, b_k)`` for backbone layers 2..L,
    ``(head_w, head_b)`` if L > 0, ``(w_tau, A)`` in ``pure`` mode -- all as returned by ``fused_weights``."""

    def __init__(self, block, need_grad: bool):
        self.mode, self.layers, self.need_grad = block.mode, len(block.backbone), need_grad
        self.kind, self.k_in, self.alpha, _ = _form(block)

    def forward(self, ctx, px, h0, ts, keep, w_hT, *weights):
        mode, layers, kind, k_in, alpha = self.mode, self.layers, self.kind, self.k_in, self.alpha
        batch, steps, H = px.shape[0], px.shape[1], h0.shape[1]
        rest = [(weights[2 * i], weights[2 * i + 1]) for i in range(layers - 1)] if layers else []
        head_w, head_b = (weights[2 * layers - 2], weights[2 * layers - 1]) if layers else (None, None)
        head_wT = head_w.t() if layers else None
        w_tau, amp = (weights[-2], weights[-1]) if mode == "pure" else (None, None)
        px_t, ts_t = px.unbind(1), ts.t().unsqueeze(-1).unbind(0)
        keep_t = keep.t().unsqueeze(-1).unbind(0) if keep is not None else None
        minus_one, two = h0.new_full((1, 1), -1.0), h0.new_full((1, 1), 2.0)
        abs_w_tau = w_tau.abs() if mode == "pure" else None

        # Preallocated (T, ...) buffers written through per-step views: no per-step lists or stacks.
        history = h0.new_empty(steps + 1, batch, H)
        history[0] = h0
        hist = history.unbind(0)
        z_all = h0.new_empty(steps, batch, H if mode == "pure" else 4 * H)
        zs = z_all.unbind(0)
        units = w_hT.shape[1]
        g_in = [h0.new_empty(steps, batch, units) for _ in range(layers)]
        g_out = [h0.new_empty(steps, batch, units) for _ in range(layers)]
        g_in_t, g_out_t = [x.unbind(0) for x in g_in], [x.unbind(0) for x in g_out]
        sig_all = h0.new_empty(steps, batch, 3 * H) if mode != "pure" else None
        sig_t = sig_all.unbind(0) if sig_all is not None else None
        h = h0
        for t in range(steps):
            z = zs[t]
            if layers:
                u = torch.addmm(px_t[t], h, w_hT, beta=k_in, alpha=k_in, out=g_in_t[0][t])
                a = _g(kind, u, g_out_t[0][t])
                for k, (w, b) in enumerate(rest, start=1):
                    u = torch.addmm(b, a, w.t(), beta=k_in, alpha=k_in * alpha, out=g_in_t[k][t])
                    a = _g(kind, u, g_out_t[k][t])
                torch.addmm(head_b, a, head_wT, alpha=alpha, out=z)
            else:
                torch.addmm(px_t[t], h, w_hT, out=z)
            if mode == "pure":
                decay = torch.exp(-ts_t[t] * (abs_w_tau + z.abs()))
                new = amp - amp * decay * z
            else:
                # z = [time_a | 2 ff1 | 2 ff2 | time_b]; the gate pre-activation overwrites time_b in place
                t_b = z.narrow(1, 3 * H, H)
                torch.addcmul(t_b, z.narrow(1, 0, H), ts_t[t], out=t_b)
                sig = torch.sigmoid(z.narrow(1, H, 3 * H), out=sig_t[t])  # [s1 | s2 | gate], ff = 2 s - 1
                s_ff, gate = sig.narrow(1, 0, 2 * H), sig.narrow(1, 2 * H, H)
                ff1, ff2 = torch.addcmul(minus_one, s_ff, two).chunk(2, dim=1)
                out = hist[t + 1] if keep is None else None  # with a mask, `where` below writes the history
                if mode == "no_gate":
                    new = torch.addcmul(ff1, gate, ff2, out=out) if out is not None else torch.addcmul(ff1, gate, ff2)
                else:
                    new = torch.lerp(ff1, ff2, gate, out=out) if out is not None else torch.lerp(ff1, ff2, gate)
            if keep is not None:
                new = torch.where(keep_t[t], new, h, out=hist[t + 1])
            elif mode == "pure":
                hist[t + 1].copy_(new)
            h = hist[t + 1]

        ctx.has_keep, ctx.n_weights = keep is not None, len(weights)
        if not self.need_grad:
            return history[1:]
        # Local Jacobians of every step, batched over all T steps.
        ts_tb = ts.t().unsqueeze(-1)  # (T, B, 1)
        if mode == "pure":
            z = z_all
            decay = torch.exp(-ts_tb * (abs_w_tau + z.abs()))
            a_e = amp * decay
            jac = a_e * (ts_tb * z.abs() - 1.0)  # dh/dz
            extra = (1.0 - decay * z, a_e * z * ts_tb, a_e * z * (abs_w_tau + z.abs()))  # dh/dA, dh/d|w_tau|, dh/dt
        else:
            t_a = z_all[..., :H]
            s1, s2, gate = sig_all.split(H, dim=-1)
            ff_slope1, ff_slope2 = 2.0 * (s1 - s1 * s1), 2.0 * (s2 - s2 * s2)
            gate_slope = gate - gate * gate
            if mode == "no_gate":
                c_ff1, c_ff2, c_tb = ff_slope1, gate * ff_slope2, (2.0 * s2 - 1.0) * gate_slope
            else:
                c_ff1, c_ff2, c_tb = (1.0 - gate) * ff_slope1, gate * ff_slope2, 2.0 * (s2 - s1) * gate_slope
            jac = torch.stack([c_tb * ts_tb, c_ff1, c_ff2, c_tb], dim=2)  # (T, B, 4, H), rows like z
            extra = (t_a,)
        if keep is not None:
            keep_f = keep.t().to(jac.dtype)
            jac = jac * keep_f.reshape(keep_f.shape + (1,) * (jac.dim() - 2))
        slopes = [_g_slope(kind, g_in[k], g_out[k]) * (alpha * k_in) for k in range(layers)]
        ctx.save_for_backward(
            history,
            ts,
            keep if keep is not None else ts.new_empty(0),
            w_hT,
            jac,
            *weights,
            *extra,
            *slopes,
            *g_out,
        )
        return history[1:]

    def backward(self, ctx, grad_states):
        mode, layers, alpha = self.mode, self.layers, self.alpha
        saved, n = ctx.saved_tensors, ctx.n_weights
        history, ts, keep, w_hT, jac = saved[:5]
        weights = saved[5 : 5 + n]
        n_extra = 3 if mode == "pure" else 1
        extra = saved[5 + n : 5 + n + n_extra]
        slopes = saved[5 + n + n_extra : 5 + n + n_extra + layers]
        g_out = saved[5 + n + n_extra + layers :]
        rest_w = [weights[2 * i] for i in range(layers - 1)] if layers else []
        head_w = weights[2 * layers - 2] if layers else None
        steps, batch, H = grad_states.shape
        grad_states = grad_states.contiguous()
        drop = (~keep).t().unsqueeze(-1).to(grad_states.dtype) if ctx.has_keep else None  # (T, B, 1)

        d_z = grad_states.new_empty(jac.shape)
        d_u = [torch.empty_like(s) for s in slopes]
        d_h = grad_states.new_empty(steps, batch, H) if mode == "pure" else None
        # per-step views, taken once (indexing a tensor inside the loop costs more than the small ops)
        grads_t, jac_t, d_z_t = grad_states.unbind(0), jac.unbind(0), d_z.unbind(0)
        slopes_t, d_u_t = [x.unbind(0) for x in slopes], [x.unbind(0) for x in d_u]
        d_h_t = d_h.unbind(0) if d_h is not None else None
        drop_t = drop.unbind(0) if drop is not None else None
        w_h = w_hT.t()
        zeros = torch.zeros_like(grads_t[0])
        dh = grads_t[steps - 1]
        for t in range(steps - 1, -1, -1):
            if d_h_t is not None:
                d_h_t[t].copy_(dh)
            dz = torch.mul(dh if mode == "pure" else dh.unsqueeze(1), jac_t[t], out=d_z_t[t])
            first = dz.view(batch, -1)
            if layers:
                d_g = first @ head_w
                for k in range(layers - 1, -1, -1):
                    first = torch.mul(d_g, slopes_t[k][t], out=d_u_t[k][t])
                    if k:
                        d_g = first @ rest_w[k - 1]
            base = grads_t[t - 1] if t else zeros
            if drop_t is not None:
                base = torch.addcmul(base, dh, drop_t[t])  # padding steps pass the gradient straight through
            dh = torch.addmm(base, first, w_h)

        d_first_all = d_u[0] if layers else d_z.reshape(steps, batch, -1)  # (T, B, F): gradient w.r.t. px
        d_w_hT = history[:-1].reshape(-1, H).t() @ d_first_all.reshape(steps * batch, -1)
        d_weights = [d_w_hT] + _layer_and_head_grads(layers, alpha, d_u, d_z, g_out)
        if mode == "pure":
            w_tau = weights[-2]
            dA, d_abs_w_tau, dt_coef = extra
            masked = d_h if drop is None else d_h * (1.0 - drop)
            d_weights += [(masked * d_abs_w_tau).sum((0, 1)) * torch.sign(w_tau), (masked * dA).sum((0, 1))]
            d_ts = (masked * dt_coef).sum(-1)
        else:
            d_ts = (d_z[:, :, 3] * extra[0]).sum(-1)  # d gate_pre / d t = time_a
        return d_first_all.transpose(0, 1), dh, d_ts.t(), None, *d_weights


def _layer_and_head_grads(layers, alpha, d_u, d_z, g_out):
    """``[(d W_k, d b_k) for layers 2..L, (d head_w, d head_b)]``, each ONE matmul over all B*T rows."""

    def flat(x):
        return x.reshape(-1, x.shape[-1])

    def scaled(m):
        return m if alpha == 1.0 else m.mul_(alpha)

    d_zf = d_z.reshape(d_z.shape[0] * d_z.shape[1], -1)
    d_weights = []
    for k in range(1, layers):  # u_k = alpha g_{k-1} W_k^T + b_k
        d_weights += [scaled(flat(d_u[k]).t() @ flat(g_out[k - 1])), flat(d_u[k]).sum(0)]
    if layers:
        d_weights += [scaled(d_zf.t() @ flat(g_out[layers - 1])), d_zf.sum(0)]
    return d_weights


# ---- numpy ---------------------------------------------------------------------------------------------
_NUMPY_FAMILIES = {
    "sigmoid": np_sigmoid,
    "relu": lambda u: np.maximum(u, 0.0),
    "silu": lambda u: u * np_sigmoid(u),
}


class NumpyCfC(Kernel):
    """The streaming step in numpy (used without the compiled kernels): ``native/cfc.inc``'s algebra."""

    backend = "numpy"

    @classmethod
    def supports(cls, core, dtype, purpose):
        """Streaming steps only, for a ``fusable`` core."""
        return purpose == "step" and fusable(core, dtype)

    def __init__(self, core, dtype, purpose):
        super().__init__(core, dtype, purpose)
        self.np_dtype = np.float32 if dtype == torch.float32 else np.float64
        self._blocks = [self._prepare(block, ctx) for block, ctx in _contexts(core)]
        self._bounds = np.cumsum([0] + core.layer_sizes)

    def _array(self, tensor):
        """A contiguous numpy COPY of a parameter-derived tensor: the kernel never aliases a weight."""
        return np.array(tensor.detach().cpu().numpy(), dtype=self.np_dtype, order="C", copy=True)

    def _prepare(self, block, ctx):
        family, k, alpha, beta = _form(block)
        g = _NUMPY_FAMILIES[family]
        f = self._array
        layers = [(f(layer.weight.t()), f(layer.bias)) for layer in block.backbone[1:]]
        heads = (f(ctx["heads"].t()), f(block.head_bias)) if block.backbone else None
        pure = (np.abs(f(block.w_tau)), f(block.A)) if block.mode == "pure" else None
        # [x | h | 1] @ first: the input, the state and the bias in one product
        first = f(torch.cat([ctx["w_x"].t(), ctx["w_hT"], ctx["b"][None]]))
        H, mode = block.hidden, block.mode
        ones = {}

        def act(u):
            return alpha * g(k * u) + beta

        def step(x, h, ts):
            batch = x.shape[0]
            one = ones.get(batch)
            if one is None:
                one = ones[batch] = np.ones((batch, 1), dtype=first.dtype)
            z = np.concatenate((x, h, one), axis=1) @ first
            if heads is not None:
                a = act(z)
                for w, b in layers:
                    a = act(a @ w + b)
                z = a @ heads[0] + heads[1]
            if mode == "pure":
                abs_w_tau, amp = pure
                a_e = amp * np.exp(-ts * (abs_w_tau + np.abs(z)))
                return amp - a_e * z
            # [2 ff1 | 2 ff2 | time_b + time_a t] -> sigmoids in one call
            pre = np.empty((batch, 3 * H), dtype=z.dtype)
            np.multiply(z[:, : 2 * H], 2.0, out=pre[:, : 2 * H])
            np.multiply(z[:, 2 * H : 3 * H], ts, out=pre[:, 2 * H :])
            pre[:, 2 * H :] += z[:, 3 * H :]
            s = np_sigmoid(pre)
            ff1, ff2, gate = 2.0 * s[:, :H] - 1.0, 2.0 * s[:, H : 2 * H] - 1.0, s[:, 2 * H :]
            return ff1 + gate * ff2 if mode == "no_gate" else ff1 + gate * (ff2 - ff1)

        return step

    def step(self, x, state, dt):
        """The streaming update in numpy, block by block for a wiring."""
        x_np = x.detach().numpy()
        h_np = state.detach().numpy()
        ts = dt.detach().numpy().reshape(-1, 1)
        if len(self._blocks) == 1:
            return torch.from_numpy(self._blocks[0](x_np, h_np, ts))
        out, inp = [], x_np
        for block_step, lo, hi in zip(self._blocks, self._bounds[:-1], self._bounds[1:]):
            inp = block_step(inp, h_np[:, lo:hi], ts)
            out.append(inp)
        return torch.from_numpy(np.concatenate(out, axis=1))
