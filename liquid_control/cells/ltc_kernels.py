"""The LTC kernels behind the dispatcher (``kernels.py``): ``compiled`` (C), ``torch`` and ``numpy``.

One algebra, the semi-implicit step of ``solvers.py`` (ncps's fused step), per sub-step ``h = dt / substeps``
with ``a0``/``b0`` the leak + sensory terms and ``den``/``num`` the recurrent synapse sums at ``v``::

    v' = v + (h b - h a v) / (cm + h a),   h a = h a0 + h den,   h b = h b0 + h num

(exact for dt = 0). The sensory synapses depend only on the input, so they are computed for every step of a
sequence at once (``LTCCell.prepare_inputs``) in torch; the kernels run the recurrent sub-steps.

Why: LTC training time goes into (B, N, N) synapse tensors. Autograd keeps every one of them for every
sub-step (hundreds of MB for a 64-unit model over 64 steps) and walks ~25 nodes per sub-step.

- ``CompiledLTC`` (``native/ltc.inc``): one sample at a time, so a sub-step's (N, N) activations are formed,
  used and reduced in one pass and never stored; the backward recomputes them the same way. The streaming step
  runs input mapping, sensory synapses and sub-steps in one C call.
- ``TorchLTC``: the forward keeps only the (B, N) state and conductance sums of each sub-step; the backward
  recomputes the synapse activations of one sub-step at a time (they stay in cache) and accumulates the
  parameter gradients in place in (B, N, N) buffers, reduced over the batch once at the end.
- ``NumpyLTC``: the streaming step in numpy (no compiler), for every fixed-step solver: the same
  ``LTCDynamics`` on numpy arrays.

``test_cells.py`` checks each against autograd on the stepwise graph, and with ``gradcheck``.
"""

from __future__ import annotations

import numpy as np
import torch

from . import native
from .activations import np_sigmoid
from .kernels import FusedSequence, Kernel, native_kernels, needs_grad
from .solvers import SemiImplicit


def _semi_implicit(core, dtype) -> bool:
    return type(core.solver) is SemiImplicit and all(
        p.dtype == dtype and p.device.type == "cpu" for p in core.parameters()
    )


def _sequence_inputs(core, x):
    """Sensory sums (torch, differentiable) and the step-context tensors the sequence kernels take."""
    ctx = core.step_context()
    sensory = core.prepare_inputs(x, ctx)
    params = (
        ctx["sigma"],
        ctx["neg_sigma_mu"],
        ctx["w"],
        ctx["w_erev"],
        ctx["cm"],
        ctx["gleak"] + core.epsilon,
        ctx["gleak_vleak"],
    )
    return sensory, params


# ---- compiled ------------------------------------------------------------------------------------------
class CompiledLTC(Kernel):
    """``native/ltc.inc``: sequence forward/backward (semi-implicit) and the streaming step."""

    backend = "compiled"

    @classmethod
    def supports(cls, core, dtype, purpose):
        """The compiled library is loaded and the core runs the semi-implicit solver with CPU weights of ``dtype``."""
        return native_kernels() is not None and _semi_implicit(core, dtype)

    def __init__(self, core, dtype, purpose):
        super().__init__(core, dtype, purpose)
        self.native = native_kernels()
        if purpose == "step":
            self._prepare_step()

    def sequence(self, x, state, dt, keep):
        """The recurrent sub-steps of the whole sequence in C (sensory sums from torch), one autograd node."""
        sensory, params = _sequence_inputs(self.core, x)
        part = _CompiledLTCSequence(self.native, self.core.solver.substeps, needs_grad(sensory, state, dt, *params))
        return FusedSequence.apply(part, sensory, state, dt, keep, *params).transpose(0, 1)

    def _prepare_step(self):
        core, dtype = self.core, self.dtype
        ctx = core.step_context()
        in_w = core.input_w if core.input_w is not None else torch.ones(core.input_size)
        in_b = core.input_b if core.input_b is not None else torch.zeros(core.input_size)

        def copy(t):  # the kernel never sees the weights themselves
            return t.detach().to(dtype).contiguous().clone()

        self.n, self.inputs = core.state_size, core.input_size
        self.scratch = native.StepScratch()
        self.call = self.native.function("ltc_step", dtype).bind(
            N=core.state_size,
            I=core.input_size,
            K=core.solver.substeps,
            in_w=copy(in_w),
            in_b=copy(in_b),
            s_sigma=copy(core.sensory_sigma),
            s_nsm=copy(-(core.sensory_sigma * core.sensory_mu)),
            s_w=copy(ctx["sensory_w"]),
            s_werev=copy(ctx["sensory_w_erev"]),
            sigma=copy(ctx["sigma"]),
            nsm=copy(ctx["neg_sigma_mu"]),
            w=copy(ctx["w"]),
            werev=copy(ctx["w_erev"]),
            cm=copy(ctx["cm"]),
            leak=copy(ctx["gleak"] + core.epsilon),
            leak_vleak=copy(ctx["gleak_vleak"]),
        )

    def step(self, x, state, dt):
        """The streaming update in one C call: input mapping, sensory synapses and sub-steps."""
        batch, n = x.shape[0], self.n
        out = torch.empty(batch, n, dtype=self.dtype)
        work = self.scratch.get(4 * batch * n + 8 * n + self.inputs, self.dtype)  # ltc_step: 4 B N + 8 N + I
        x, state, dt = x.contiguous(), state.contiguous(), dt.contiguous()  # dtype: RecurrentCore.advance checked
        self.call.unchecked(B=batch, x=x, state=state, dt=dt, out=out, work=work)
        return out


class _CompiledLTCSequence:
    """``FusedSequence`` part: ``ltc_forward`` / ``ltc_backward``, one sample at a time, no (B, N, N) tensor.

    Inputs: ``sensory`` (B, T, 2N) = [sum g E | sum g] of the sensory synapses; ``h0`` (B, N); ``dt`` (B, T);
    ``keep`` (B, T) bool or None; the step-context tensors ``sigma, neg_sigma_mu, w, w_erev`` (N, N) and
    ``cm, leak, leak_vleak`` (N,) where ``leak`` includes epsilon."""

    def __init__(self, lib, substeps: int, need_grad: bool):
        self.lib, self.substeps, self.need_grad = lib, substeps, need_grad

    def forward(self, ctx, sensory, h0, dt, keep, sigma, nsm, w, werev, cm, leak, leak_vleak):
        batch, steps = dt.shape
        n, substeps = h0.shape[1], self.substeps
        sensory, h0, dt = sensory.contiguous(), h0.contiguous(), dt.contiguous()
        keep_u8 = keep.to(torch.uint8).contiguous() if keep is not None else None
        params = [p.contiguous() for p in (sigma, nsm, w, werev, cm, leak, leak_vleak)]
        history = h0.new_empty(steps + 1, batch, n)
        records = h0.new_empty(3, steps, substeps, batch, n) if self.need_grad else None
        names = ("sigma", "nsm", "w", "werev", "cm", "leak", "leak_vleak")
        self.lib.function("ltc_forward", h0.dtype)(
            B=batch,
            T=steps,
            N=n,
            K=substeps,
            sensory=sensory,
            h0=h0,
            dt=dt,
            keep=keep_u8,
            **dict(zip(names, params)),
            history=history,
            records=records,
            work=h0.new_empty(8 * n),
        )
        if self.need_grad:
            ctx.save_for_backward(
                sensory, dt, keep_u8 if keep_u8 is not None else dt.new_empty(0), history, records, *params
            )
            ctx.has_keep = keep is not None
        return history[1:]

    def backward(self, ctx, grad_states):
        sensory, dt, keep_u8, history, records, *params = ctx.saved_tensors
        steps, batch, n = grad_states.shape
        d_sensory, d_h0, d_dt = torch.empty_like(sensory), history.new_empty(batch, n), torch.empty_like(dt)
        d_params = [torch.empty_like(p) for p in params]
        names = ("sigma", "nsm", "w", "werev", "cm", "leak", "leak_vleak")
        self.lib.function("ltc_backward", history.dtype)(
            B=batch,
            T=steps,
            N=n,
            K=self.substeps,
            grad=grad_states.contiguous(),
            sensory=sensory,
            dt=dt,
            keep=keep_u8 if ctx.has_keep else None,
            **dict(zip(names, params)),
            history=history,
            records=records,
            d_sensory=d_sensory,
            d_h0=d_h0,
            d_dt=d_dt,
            **{f"d_{name}": d for name, d in zip(names, d_params)},
            work=history.new_empty(14 * n),  # ltc_backward: 14 N
        )
        return (d_sensory, d_h0, d_dt, None, *d_params)


# ---- torch ---------------------------------------------------------------------------------------------
class TorchLTC(Kernel):
    """The semi-implicit sequence in torch with a hand-written backward (``_TorchLTCSequence``)."""

    backend = "torch"

    @classmethod
    def supports(cls, core, dtype, purpose):
        """Sequences only, for the semi-implicit solver with CPU weights of ``dtype``."""
        return purpose == "sequence" and _semi_implicit(core, dtype)

    def sequence(self, x, state, dt, keep):
        """The semi-implicit sequence in torch, one autograd node with a hand-written backward."""
        sensory, params = _sequence_inputs(self.core, x)
        part = _TorchLTCSequence(self.core.solver.substeps, needs_grad(sensory, state, dt, *params))
        return FusedSequence.apply(part, sensory, state, dt, keep, *params).transpose(0, 1)


class _TorchLTCSequence:
    """``FusedSequence`` part in torch (inputs as ``_CompiledLTCSequence``)."""

    def __init__(self, substeps: int, need_grad: bool):
        self.substeps, self.need_grad = substeps, need_grad

    def forward(self, ctx, sensory, h0, dt, keep, sigma, neg_sigma_mu, w, w_erev, cm, leak, leak_vleak):
        substeps, need_grad = self.substeps, self.need_grad
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
        ctx.has_keep = keep is not None
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

    def backward(self, ctx, grad_states):
        substeps = self.substeps
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


# ---- numpy ---------------------------------------------------------------------------------------------
class NumpyLTC(Kernel):
    """The streaming step in numpy for every fixed-step solver: ``LTCDynamics`` on numpy arrays."""

    backend = "numpy"

    @classmethod
    def supports(cls, core, dtype, purpose):
        """Streaming steps only, for any solver that runs on numpy arrays, with CPU weights of ``dtype``."""
        return (
            purpose == "step"
            and core.solver.supports_numpy
            and all(p.dtype == dtype and p.device.type == "cpu" for p in core.parameters())
        )

    def __init__(self, core, dtype, purpose):
        super().__init__(core, dtype, purpose)
        np_dtype = np.float32 if dtype == torch.float32 else np.float64

        def f(tensor):  # a contiguous numpy COPY: the kernel never aliases a weight
            return np.array(tensor.detach().cpu().numpy(), dtype=np_dtype, order="C", copy=True)

        ctx = core.step_context()
        in_w = core.input_w if core.input_w is not None else torch.ones(core.input_size)
        in_b = core.input_b if core.input_b is not None else torch.zeros(core.input_size)
        # (post, pre) layouts: every synapse sum is one vecdot over contiguous memory
        self.recurrent = {
            "sigma": f(ctx["sigma"].t()),
            "neg_sigma_mu": f(ctx["neg_sigma_mu"].t()),
            "w_stack": f(torch.stack([ctx["w"].t(), ctx["w_erev"].t()])[:, None]),  # (2, 1, post, pre)
            "cm": f(ctx["cm"]),
        }
        self.leak = f(torch.stack([ctx["gleak"] + core.epsilon, ctx["gleak_vleak"]])[:, None])  # (2, 1, N)
        self.in_w, self.in_b = f(in_w), f(in_b)
        self.s_sigma = f(core.sensory_sigma.t())
        self.s_neg_shift = f(-(core.sensory_sigma * core.sensory_mu).t())
        self.s_stack = f(torch.stack([ctx["sensory_w"].t(), ctx["sensory_w_erev"].t()])[:, None])  # (2, 1, post, in)
        self.solver = core.solver
        from .ltc import LTCDynamics  # ltc.py imports this module for its kernel table

        self.dynamics = LTCDynamics

    def step(self, x, state, dt):
        """The streaming update in numpy: input mapping, sensory sums, then the core's solver on ``LTCDynamics``."""
        mapped = x.detach().numpy() * self.in_w + self.in_b
        act = np.multiply(mapped[:, None, :], self.s_sigma)  # (B, post, inputs)
        act += self.s_neg_shift
        sensory = np.vecdot(np_sigmoid(act, out=act), self.s_stack)  # (2, B, N): [sum g, sum g E]
        ode = self.dynamics(self.recurrent, self.leak + sensory, self.recurrent["cm"])
        v = self.solver.solve(ode, state.detach().numpy(), dt.detach().numpy().reshape(-1, 1))
        return torch.from_numpy(np.ascontiguousarray(v))
