"""A whole CfC sequence as one autograd node, with a hand-written backward pass (backprop through time).

Why: on a CPU, autograd over the step-by-step graph is dominated by per-op overhead (~25 small nodes per step),
not by arithmetic. Here

- the forward loop runs 7 ops per step and keeps only views of what it computed;
- each step's local Jacobian of the closed-form update (a diagonal per unit, four entries: time_a, ff1, ff2,
  time_b) is formed afterwards for ALL steps in a few batched ops;
- the backward loop is then 4 ops per step: ``dz = dh * C[t]``, two matmuls through the backbone and the
  recurrent weights, one multiply by the activation slope;
- every weight gradient is ONE matmul over all B*T rows at the end.

CPU details measured with torch 2.13 on this machine: ``tanh`` is ~10x slower than ``sigmoid``, so every tanh
is computed as ``2 sigmoid(2x) - 1`` with the factor 2 folded into weights and matmul ``alpha``/``beta``;
constants go in as ``value=``/``alpha=`` arguments rather than as Python-scalar operands.

An activation is ``act(u) = alpha * g(k * u) + beta`` with ``g`` in {sigmoid, relu, silu}; the consumer
matmul applies ``alpha`` and a bias pre-shifted by ``beta * rowsum(W)`` (``fused_weights``, under autograd).

Used by ``CfCBlock.fused_sequence`` for a block whose activation is listed in ``FUSED_ACTIVATIONS`` and whose
dropout is inactive, when the compiled kernels (``native``) are unavailable; with them, ``CompiledCfCSequence``
(below) runs instead. Everything else takes the generic per-step path. ``test_cells.py`` checks both against
autograd on the generic path, and with ``gradcheck``.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

# name -> (g, k, alpha, beta) with act(u) = alpha * g(k u) + beta
FUSED_ACTIVATIONS = {
    "lecun_tanh": ("sigmoid", 2 * 0.666, 2 * 1.7159, -1.7159),  # 1.7159 tanh(0.666 u)
    "tanh": ("sigmoid", 2.0, 2.0, -1.0),
    "relu": ("relu", 1.0, 1.0, 0.0),
    "silu": ("silu", 1.0, 1.0, 0.0),
}


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


def fused_weights(activation: str, hidden: int, mode: str, backbone, heads, head_bias, w_x, w_hT, b):
    """Re-express a block's weights for ``CfCSequence`` (differentiably, so autograd maps gradients back):
    biases shifted by ``beta * rowsum(W)``; for the gated modes the heads reordered to
    ``[time_a, ff1, ff2, time_b]`` with the ff rows doubled (tanh via sigmoid).
    Returns ``(w_x, w_hT, b, weights)`` for the first linear map and the remaining layers."""
    _, _, _, beta = FUSED_ACTIVATIONS[activation]
    weights = []
    for layer in backbone[1:]:
        weights += [layer.weight, layer.bias + beta * layer.weight.sum(1) if beta else layer.bias]
    if mode == "pure":
        order = scale = None
    else:
        H = hidden
        order = torch.cat([torch.arange(2 * H, 3 * H), torch.arange(0, 2 * H), torch.arange(3 * H, 4 * H)])
        scale = heads.new_ones(4 * H)
        scale[H : 3 * H] = 2.0
    if backbone:
        head_b = head_bias + beta * heads.sum(1) if beta else head_bias
        if order is not None:
            heads, head_b = heads[order] * scale[:, None], head_b[order] * scale
        weights += [heads, head_b]
    elif order is not None:
        w_x, w_hT, b = w_x[order] * scale[:, None], w_hT[:, order] * scale, b[order] * scale
    return w_x, w_hT, b, weights


class CfCSequence(torch.autograd.Function):
    """states (T, B, H) of a CfC block run over a sequence (see the module docstring).

    Inputs: ``spec = (mode, activation, backbone_layers, need_grad)``; ``px`` (B, T, F) input part of the
    first linear map (bias included); ``h0`` (B, H); ``ts`` (B, T); ``keep`` (B, T) bool or None; ``w_hT`` (H, F); then
    ``(W_k, b_k)`` for backbone layers 2..L, ``(head_w, head_b)`` if L > 0, ``(w_tau, A)`` in ``pure`` mode --
    all as returned by ``fused_weights``.
    """

    @staticmethod
    def forward(ctx, spec, px, h0, ts, keep, w_hT, *weights):
        mode, activation, layers, need_grad = spec
        kind, k_in, alpha, _ = FUSED_ACTIVATIONS[activation]
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

        ctx.spec, ctx.has_keep, ctx.n_weights = spec, keep is not None, len(weights)
        if not need_grad:
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

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states):
        mode, activation, layers, _ = ctx.spec
        _, _, alpha, _ = FUSED_ACTIVATIONS[activation]
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
        return None, d_first_all.transpose(0, 1), dh, d_ts.t(), None, *d_weights


def _layer_and_head_grads(layers, alpha, d_u, d_z, g_out):
    """``[(d W_k, d b_k) for layers 2..L, (d head_w, d head_b)]``, each ONE matmul over all B*T rows."""
    flat = lambda x: x.reshape(-1, x.shape[-1])  # noqa: E731
    scaled = (lambda m: m) if alpha == 1.0 else (lambda m: m.mul_(alpha))
    d_zf = d_z.reshape(d_z.shape[0] * d_z.shape[1], -1)
    d_weights = []
    for k in range(1, layers):  # u_k = alpha g_{k-1} W_k^T + b_k
        d_weights += [scaled(flat(d_u[k]).t() @ flat(g_out[k - 1])), flat(d_u[k]).sum(0)]
    if layers:
        d_weights += [scaled(d_zf.t() @ flat(g_out[layers - 1])), d_zf.sum(0)]
    return d_weights


# how the compiled kernel (native/cfc.inc) numbers the modes and the activation families
KERNEL_MODES = {"default": 0, "no_gate": 1, "pure": 2}
KERNEL_ACTIVATIONS = {"sigmoid": 0, "relu": 1, "silu": 2}


def transposed(matrices):
    """Contiguous W^T of each weight: the compiled forward multiplies by W^T row-major (``native/cfc.inc``)."""
    return [m.detach().t().contiguous() for m in matrices]


class CompiledCfCSequence(torch.autograd.Function):
    """``CfCSequence`` on the compiled kernels (``native/cfc.inc``), on the block's own weights.

    Both time loops, the input projection, the activations, every step's local Jacobian and the weight
    gradients (products over chunks of ~256 rows of B*T) run in C, one call forward and one backward. The
    kernel computes the true activations (``alpha g + beta``) and ``tanh`` itself, so no weight is reordered
    or re-expressed; the forward takes ``W^T`` of the weights it multiplies by (``transposed``).

    Inputs: ``kernels``; ``spec`` as ``CfCSequence``; ``x`` (B, T, I); ``h0``; ``ts``; ``keep``; the first
    linear map ``(W, b)`` (W over ``[x | h]``); then ``(W_k, b_k)`` for backbone layers 2..L,
    ``(heads, head_bias)`` if L > 0, ``(w_tau, A)`` in ``pure`` mode.
    """

    @staticmethod
    def forward(ctx, kernels, spec, x, h0, ts, keep, first_w, first_b, *weights):
        mode, activation, layers, need_grad = spec
        kind, k, alpha, beta = FUSED_ACTIVATIONS[activation]
        batch, steps, features = x.shape
        H = h0.shape[1]
        units = first_w.shape[0] if layers else 0
        Z = H if mode == "pure" else 4 * H
        x_tb = x.transpose(0, 1).contiguous()
        h0, ts, first_w, first_b = h0.contiguous(), ts.contiguous(), first_w.contiguous(), first_b.contiguous()
        weights = [w.contiguous() for w in weights]
        keep_u8 = keep.to(torch.uint8).contiguous() if keep is not None else None
        layer_wT, layer_b = transposed(weights[0 : 2 * layers - 2 : 2]), weights[1 : 2 * layers - 2 : 2]
        headT, head_b = (transposed([weights[2 * layers - 2]])[0], weights[2 * layers - 1]) if layers else (None, None)
        w_tau, amp = (weights[-2], weights[-1]) if mode == "pure" else (None, None)
        new = h0.new_empty
        history = new(steps + 1, batch, H)
        g_out = [new(steps, batch, units) for _ in range(layers)]
        jac = new(steps, batch, Z) if need_grad else None
        aux = new((3 if mode == "pure" else 1) * steps, batch, H) if need_grad else None
        slopes = [new(steps, batch, units) for _ in range(layers)] if need_grad else None
        work = new(kernels.cfc_work(batch, steps, H, units, layers, KERNEL_MODES[mode]))
        wxT, whT = transposed([first_w[:, :features], first_w[:, features:]])
        kernels.call(
            "cfc_forward",
            h0.dtype,
            batch,
            steps,
            H,
            units,
            layers,
            features,
            KERNEL_MODES[mode],
            KERNEL_ACTIVATIONS[kind],
            k,
            alpha,
            beta,
            x_tb,
            h0,
            ts,
            keep_u8,
            wxT,
            whT,
            first_b,
            layer_wT,
            layer_b,
            headT,
            head_b,
            w_tau,
            amp,
            history,
            g_out,
            jac,
            aux,
            slopes,
            work,
        )
        if need_grad:
            ctx.spec, ctx.kernels, ctx.n_weights, ctx.has_keep = spec, kernels, len(weights), keep is not None
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

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states):
        mode, _, layers, _ = ctx.spec
        saved, n = ctx.saved_tensors, ctx.n_weights
        x_tb, history, keep_u8, first_w, jac, aux = saved[:6]
        weights = saved[6 : 6 + n]
        slopes, g_out = saved[6 + n : 6 + n + layers], saved[6 + n + layers :]
        steps, batch, H = grad_states.shape
        features = x_tb.shape[-1]
        units = first_w.shape[0] if layers else 0
        new = history.new_empty
        d_z, d_u = torch.empty_like(jac), [new(steps, batch, units) for _ in range(layers)]
        d_ts, d_h0 = new(batch, steps), new(batch, H)
        d_x_tb = new(steps, batch, features) if ctx.needs_input_grad[2] else None
        d_first_w, d_first_b = torch.empty_like(first_w), new(first_w.shape[0])
        d_layers = [torch.empty_like(w) for w in weights[: 2 * layers - 2]] if layers else []
        d_head = [torch.empty_like(w) for w in weights[2 * layers - 2 : 2 * layers]] if layers else [None, None]
        d_pure = new(2, H) if mode == "pure" else None
        ctx.kernels.call(
            "cfc_backward",
            history.dtype,
            batch,
            steps,
            H,
            units,
            layers,
            features,
            KERNEL_MODES[mode],
            grad_states.contiguous(),
            keep_u8 if ctx.has_keep else None,
            x_tb,
            history,
            first_w,
            weights[0 : 2 * layers - 2 : 2],
            weights[2 * layers - 2] if layers else None,
            jac,
            aux,
            slopes,
            g_out,
            d_z,
            d_u,
            d_ts,
            d_h0,
            d_x_tb,
            d_first_w,
            d_first_b,
            d_layers[0::2],
            d_layers[1::2],
            *d_head,
            d_pure,
            new(batch * (2 * H + units)),
        )
        d_weights = [d_first_w, d_first_b, *d_layers] + (d_head if layers else [])
        if mode == "pure":
            w_tau, amp = weights[-2], weights[-1]
            d_weights += [d_pure[0].reshape(w_tau.shape) * torch.sign(w_tau), d_pure[1].reshape(amp.shape)]
        d_x = d_x_tb.transpose(0, 1) if d_x_tb is not None else None
        return None, None, d_x, d_h0, d_ts, None, *d_weights
