"""A whole LTC sequence with the semi-implicit solver as one autograd node, with a hand-written backward.

Why: LTC training time goes into (B, N, N) synapse tensors. Autograd keeps every one of them for every
sub-step (hundreds of MB for a 64-unit model over 64 steps) and walks ~25 nodes per sub-step. Here the
forward keeps only the (B, N) state, conductance sums of each sub-step; the backward recomputes the synapse
activations of one sub-step at a time (they stay in cache) and accumulates the parameter gradients in place
in (B, N, N) buffers, reduced over the batch once at the end.

Per sub-step (``h = dt / substeps``, ``a0``/``b0`` the leak + sensory terms, ``den``/``num`` the recurrent
synapse sums at ``v``)::

    v' = v + (h b - h a v) / (cm + h a),   h a = h a0 + h den,   h b = h b0 + h num

which is ``SemiImplicit`` in ``solvers.py`` (the generic path), and ncps's fused step.
``test_cells.py`` checks this path against autograd on the generic one, and with ``gradcheck``.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import native


class LTCSequence(torch.autograd.Function):
    """states (T, B, N) of an LTC run with ``semi_implicit`` over a sequence.

    Inputs: ``spec = (substeps, need_grad)``; ``sensory`` (B, T, 2N) = [sum g E | sum g] of the sensory
    synapses; ``h0`` (B, N); ``dt`` (B, T); ``keep`` (B, T) bool or None; then the step context tensors
    ``sigma, neg_sigma_mu, w, w_erev`` (N, N) and ``cm, leak, leak_vleak`` (N,) where ``leak`` includes epsilon.
    """

    @staticmethod
    def forward(ctx, spec, sensory, h0, dt, keep, sigma, neg_sigma_mu, w, w_erev, cm, leak, leak_vleak):
        substeps, need_grad = spec
        params = (sigma, neg_sigma_mu, w, w_erev, cm, leak, leak_vleak)
        kernels = native.load()
        ctx.compiled = kernels is not None and kernels.supports(sensory, h0, dt, *params) and not torch.jit.is_tracing()
        if ctx.compiled:
            return _compiled_forward(ctx, kernels, spec, sensory, h0, dt, keep, params)
        batch, steps = dt.shape
        n = h0.shape[1]
        sens_num, sens_den = sensory.transpose(0, 1).chunk(2, dim=-1)  # (T, B, N) each
        h_all = (dt.t() / substeps).unsqueeze(-1)  # (T, B, 1)
        a0_all, b0_all = leak + sens_den, leak_vleak + sens_num
        h_a0_all, h_b0_all = h_all * a0_all, h_all * b0_all
        keep_t = keep.t().unsqueeze(-1).unbind(0) if keep is not None else None
        history = h0.new_empty(steps + 1, batch, n)
        history[0] = h0
        hist = history.unbind(0)
        # per sub-step records for the backward: synapse sums and the state after each sub-step
        records = h0.new_empty(3, steps, substeps, batch, n) if need_grad else None
        dens_r, nums_r, after_r = (r.reshape(-1, batch, n).unbind(0) for r in records) if need_grad else (None,) * 3
        sigma_b = sigma.unsqueeze(0)
        v = h0
        for t in range(steps):
            h, h_a0, h_b0 = h_all[t], h_a0_all[t], h_b0_all[t]
            start = v
            for k in range(substeps):
                i = t * substeps + k
                act = torch.addcmul(neg_sigma_mu, v.unsqueeze(2), sigma_b).sigmoid_()
                if need_grad:
                    den = torch.sum(act * w, 1, out=dens_r[i])
                    num = torch.sum(act * w_erev, 1, out=nums_r[i])
                else:
                    den, num = (act * w).sum(1), (act * w_erev).sum(1)
                h_a, h_b = torch.addcmul(h_a0, h, den), torch.addcmul(h_b0, h, num)
                step = torch.addcmul(h_b, h_a, v, value=-1.0) / (cm + h_a)
                v = torch.add(v, step, out=after_r[i]) if need_grad else v + step
            if keep is not None:
                v = torch.where(keep_t[t], v, start)
            hist[t + 1].copy_(v)
        ctx.spec, ctx.has_keep = spec, keep is not None
        if need_grad:
            ctx.save_for_backward(
                history,
                keep if keep is not None else dt.new_empty(0),
                records,
                h_all,
                a0_all,
                b0_all,
                sigma,
                neg_sigma_mu,
                w,
                w_erev,
                cm,
            )
        return history[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states):
        if ctx.compiled:
            return _compiled_backward(ctx, grad_states)
        substeps, _ = ctx.spec
        history, keep, records, h_all, a0_all, b0_all, sigma, neg_sigma_mu, w, w_erev, cm = ctx.saved_tensors
        dens, nums, v_after = records  # (T, K, B, N) each
        steps, batch, n = grad_states.shape
        # Everything that does not depend on the incoming gradient, for all sub-steps at once:
        # v' = v + step, step = (h b - h a v) / q, q = cm + h a  =>  dv'/dv = cm / q, dv'/d(h a) = -v'/q,
        # dv'/d(h b) = 1/q, dv'/dcm = -step/q
        v_in = torch.cat([history[:-1].unsqueeze(1), v_after[:, :-1]], dim=1)
        h_k = h_all.unsqueeze(1)  # (T, 1, B, 1)
        h_a = h_k * (a0_all.unsqueeze(1) + dens)
        inv_q = 1.0 / (cm + h_a)
        den_coef = -v_after * h_k  # d(den) = r * den_coef, with r = g / q
        r_all = torch.empty_like(v_after)
        grads_t = grad_states.contiguous().unbind(0)
        keep_tb = keep.t().unsqueeze(-1) if ctx.has_keep else None
        sigma_b = sigma.unsqueeze(0)
        # (B, N, N) accumulators, reduced over the batch at the end
        acc_w, acc_w_erev, acc_nsm, acc_sigma = (sigma.new_zeros(batch, n, n) for _ in range(4))
        g = torch.zeros_like(grads_t[0])
        for t in range(steps - 1, -1, -1):
            g = g + grads_t[t]
            if keep_tb is not None:
                carry = g * (~keep_tb[t])
                g = g * keep_tb[t]
            h = h_all[t]
            for k in range(substeps - 1, -1, -1):
                v = v_in[t, k]
                r = torch.mul(g, inv_q[t, k], out=r_all[t, k])
                d_den_b, d_num_b = (r * den_coef[t, k]).unsqueeze(1), (r * h).unsqueeze(1)
                act = torch.addcmul(neg_sigma_mu, v.unsqueeze(2), sigma_b).sigmoid_()  # recomputed
                acc_w.addcmul_(act, d_den_b)
                acc_w_erev.addcmul_(act, d_num_b)
                d_act = torch.addcmul(d_den_b * w, d_num_b, w_erev)
                d_z = d_act.mul_(act.addcmul_(act, act, value=-1.0))  # sigmoid' = s (1 - s)
                acc_nsm += d_z
                acc_sigma.addcmul_(d_z, v.unsqueeze(2))
                g = torch.addcmul((d_z * sigma_b).sum(2), r, cm)
            if keep_tb is not None:
                g = g + carry
        # gradient-independent factors times r, summed over sub-steps
        d_ha = -r_all * v_after  # (T, K, B, N)
        d_cm = -(r_all * (v_after - v_in)).sum((0, 1, 2))
        d_h_a0, d_h_b0 = d_ha.sum(1), r_all.sum(1)  # (T, B, N)
        d_h = (d_ha * dens + r_all * nums).sum((1, 3)).unsqueeze(-1)  # (T, B, 1)
        # h a0 = h (leak + sensory_den), h b0 = h (leak_vleak + sensory_num), h = dt / substeps
        d_sens_den, d_sens_num = d_h_a0 * h_all, d_h_b0 * h_all
        d_h_total = d_h + (d_h_a0 * a0_all + d_h_b0 * b0_all).sum(-1, keepdim=True)
        d_dt = (d_h_total.squeeze(-1) / substeps).t()
        d_sensory = torch.cat([d_sens_num, d_sens_den], dim=-1).transpose(0, 1)
        return (
            None,
            d_sensory,
            g,
            d_dt,
            None,
            acc_sigma.sum(0),
            acc_nsm.sum(0),
            acc_w.sum(0),
            acc_w_erev.sum(0),
            d_cm,
            d_sens_den.sum((0, 1)),
            d_sens_num.sum((0, 1)),
        )


def _compiled_forward(ctx, kernels, spec, sensory, h0, dt, keep, params):
    """The same forward in the compiled kernel (``native/ltc.inc``): one sample at a time, no (B, N, N) tensor."""
    substeps, need_grad = spec
    batch, steps = dt.shape
    n = h0.shape[1]
    sensory, h0, dt = sensory.contiguous(), h0.contiguous(), dt.contiguous()
    keep_u8 = keep.to(torch.uint8).contiguous() if keep is not None else None
    params = tuple(p.contiguous() for p in params)
    history = h0.new_empty(steps + 1, batch, n)
    records = h0.new_empty(3, steps, substeps, batch, n) if need_grad else None
    work = h0.new_empty(8 * n)
    kernels.call(
        "ltc_forward", h0.dtype, batch, steps, n, substeps, sensory, h0, dt, keep_u8, *params, history, records, work
    )
    ctx.spec = spec
    if need_grad:
        ctx.kernels = kernels
        ctx.save_for_backward(
            sensory, dt, keep_u8 if keep_u8 is not None else dt.new_empty(0), history, records, *params
        )
        ctx.has_keep = keep is not None
    return history[1:]


def _compiled_backward(ctx, grad_states):
    substeps, _ = ctx.spec
    sensory, dt, keep_u8, history, records, *params = ctx.saved_tensors
    steps, batch, n = grad_states.shape
    d_sensory, d_h0, d_dt = torch.empty_like(sensory), history.new_empty(batch, n), torch.empty_like(dt)
    d_params = [torch.empty_like(p) for p in params]
    work = history.new_empty(14 * n)  # ltc_backward: 14 N
    ctx.kernels.call(
        "ltc_backward",
        history.dtype,
        batch,
        steps,
        n,
        substeps,
        grad_states.contiguous(),
        sensory,
        dt,
        keep_u8 if ctx.has_keep else None,
        *params,
        history,
        records,
        d_sensory,
        d_h0,
        d_dt,
        *d_params,
        work,
    )
    return (None, d_sensory, d_h0, d_dt, None, *d_params)
