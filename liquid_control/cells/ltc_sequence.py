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


class LTCSequence(torch.autograd.Function):
    """states (T, B, N) of an LTC run with ``semi_implicit`` over a sequence.

    Inputs: ``spec = (substeps, need_grad)``; ``sensory`` (B, T, 2N) = [sum g E | sum g] of the sensory
    synapses; ``h0`` (B, N); ``dt`` (B, T); ``keep`` (B, T) bool or None; then the step context tensors
    ``sigma, neg_sigma_mu, w, w_erev`` (N, N) and ``cm, leak, leak_vleak`` (N,) where ``leak`` includes epsilon.
    """

    @staticmethod
    def forward(ctx, spec, sensory, h0, dt, keep, sigma, neg_sigma_mu, w, w_erev, cm, leak, leak_vleak):
        substeps, need_grad = spec
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
        # per sub-step records for the backward: state before the sub-step and the synapse sums there
        v_in = h0.new_empty(steps, substeps, batch, n) if need_grad else None
        dens = h0.new_empty(steps, substeps, batch, n) if need_grad else None
        nums = h0.new_empty(steps, substeps, batch, n) if need_grad else None
        sigma_b = sigma.unsqueeze(0)
        v = h0
        for t in range(steps):
            h, h_a0, h_b0 = h_all[t], h_a0_all[t], h_b0_all[t]
            start = v
            for k in range(substeps):
                act = torch.addcmul(neg_sigma_mu, v.unsqueeze(2), sigma_b).sigmoid_()
                den, num = (act * w).sum(1), (act * w_erev).sum(1)
                if need_grad:
                    v_in[t, k], dens[t, k], nums[t, k] = v, den, num
                h_a, h_b = torch.addcmul(h_a0, h, den), torch.addcmul(h_b0, h, num)
                v = v + torch.addcmul(h_b, h_a, v, value=-1.0) / (cm + h_a)
            if keep is not None:
                v = torch.where(keep_t[t], v, start)
            hist[t + 1].copy_(v)
        ctx.spec, ctx.has_keep = spec, keep is not None
        if need_grad:
            ctx.save_for_backward(
                history, dt, keep if keep is not None else dt.new_empty(0), v_in, dens, nums, h_all, a0_all,
                b0_all, sigma, neg_sigma_mu, w, w_erev, cm,
            )
        return history[1:]

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states):
        substeps, _ = ctx.spec
        (history, dt, keep, v_in, dens, nums, h_all, a0_all, b0_all,
         sigma, neg_sigma_mu, w, w_erev, cm) = ctx.saved_tensors
        steps, batch, n = grad_states.shape
        grads_t = grad_states.contiguous().unbind(0)
        keep_tb = keep.t().unsqueeze(-1) if ctx.has_keep else None
        sigma_b = sigma.unsqueeze(0)
        # (B, N, N) accumulators, reduced over the batch at the end
        acc_w, acc_w_erev, acc_nsm, acc_sigma = (sigma.new_zeros(batch, n, n) for _ in range(4))
        d_cm = torch.zeros_like(cm)
        d_h_a0_all, d_h_b0_all = torch.empty_like(a0_all), torch.empty_like(b0_all)
        d_h_all = torch.empty_like(h_all)
        g = torch.zeros_like(grads_t[0])
        for t in range(steps - 1, -1, -1):
            g = g + grads_t[t]
            if keep_tb is not None:
                carry = g * (~keep_tb[t])
                g = g * keep_tb[t]
            h = h_all[t]
            h_a0, h_b0 = h * a0_all[t], h * b0_all[t]
            d_h_a0, d_h_b0 = torch.zeros_like(g), torch.zeros_like(g)
            d_h = torch.zeros_like(h)
            for k in range(substeps - 1, -1, -1):
                v, den, num = v_in[t, k], dens[t, k], nums[t, k]
                h_a, h_b = torch.addcmul(h_a0, h, den), torch.addcmul(h_b0, h, num)
                q = cm + h_a
                step = torch.addcmul(h_b, h_a, v, value=-1.0) / q  # v' - v
                r = g / q  # dv'/d(h b) = 1/q, dv'/d(h a) = -v'/q, dv'/dcm = -(v' - v)/q, dv'/dv = cm/q
                d_ha = -r * (v + step)
                d_cm -= (r * step).sum(0)
                d_h_a0 += d_ha
                d_h_b0 += r
                d_den, d_num = d_ha * h, r * h
                d_h += (d_ha * den + r * num).sum(1, keepdim=True)
                # recompute this sub-step's synapse activations
                act = torch.addcmul(neg_sigma_mu, v.unsqueeze(2), sigma_b).sigmoid_()
                d_den_b, d_num_b = d_den.unsqueeze(1), d_num.unsqueeze(1)
                acc_w.addcmul_(act, d_den_b)
                acc_w_erev.addcmul_(act, d_num_b)
                d_act = torch.addcmul(d_den_b * w, d_num_b, w_erev)
                d_z = d_act.mul_(act.addcmul_(act, act, value=-1.0))  # sigmoid' = s (1 - s)
                acc_nsm += d_z
                acc_sigma.addcmul_(d_z, v.unsqueeze(2))
                g = r * cm + (d_z * sigma_b).sum(2)
            d_h_a0_all[t], d_h_b0_all[t], d_h_all[t] = d_h_a0, d_h_b0, d_h
            if keep_tb is not None:
                g = g + carry
        # h a0 = h (leak + sensory_den), h b0 = h (leak_vleak + sensory_num), h = dt / substeps
        d_sens_den, d_sens_num = d_h_a0_all * h_all, d_h_b0_all * h_all
        d_h_total = d_h_all + (d_h_a0_all * a0_all + d_h_b0_all * b0_all).sum(-1, keepdim=True)
        d_dt = (d_h_total.squeeze(-1) / substeps).t()
        d_sensory = torch.cat([d_sens_num, d_sens_den], dim=-1).transpose(0, 1)
        return (
            None, d_sensory, g, d_dt, None, acc_sigma.sum(0), acc_nsm.sum(0), acc_w.sum(0), acc_w_erev.sum(0), d_cm,
            d_sens_den.sum((0, 1)), d_sens_num.sum((0, 1)),
        )
