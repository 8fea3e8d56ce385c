"""Region anchoring (after ELA, ICML 2024, and BindEdit's region-fidelity term): guide the latent so
each object's own cross-attention lies inside its region and covers it evenly.

Neither paper publishes code or exact formulas; the concrete form is this pack's design.
For object i with token span S_i, at every recorded layer (those below the latent's
full resolution), from the model's own attention over the target base prompt (RGB-CAM's
region bias left out, so the loss sees where the latent itself puts the object):

    a_i(p)   = mean over heads of sum_{t in S_i} softmax_t(q_p . k_t / sqrt(d))   (per target row)
    P_i(p)   = a_i(p) / sum_p a_i(p)                                  (where the object's attention is)
    out_i    = 1 - sum_{p in R_i} P_i(p)                              (mass outside its region, ELA's anchor)
    Q_i(p)   = a_i(p) [p in R_i] / sum_{p in R_i} a_i(p)
    even_i   = 1/2 sum_{p in R_i} |Q_i(p) - 1/|R_i||                  (total-variation distance from uniform
                                                                      coverage: BindEdit's region fidelity)
    L        = mean over layers, rows and objects of (out_i + even_i),  both terms in [0, 1].

Update (normalised gradient descent, step proportional to the noise level):
    x <- x - strength * sigma * g / rms(g),   g = dL/dx,
the same step applied to every CFG chunk of the batch so cond and uncond see one latent. Inside the dual
branch (a guider's branch layout in the call) only the target branch's chunks take the step: the source
branch stays on the source, and DDCM's x0_hat carries the shift (it would cancel a step shared by both).

Pure torch: the wrapper takes ComfyUI's ``apply_model`` as a callable.
"""
from __future__ import annotations

import contextlib
from collections import deque

import torch

from .localisation import span_attention
from .region_attention import PROGRAM_KEY, SigmaWindow
from .self_attention import LAYOUT_KEY


def anchoring_loss(records: list[tuple[torch.Tensor, torch.Tensor]], eps: float = 1e-8) -> torch.Tensor:
    """L = mean over (layer, row, object) of out_i + even_i.

    ``records`` holds (a [R, N, HW], region masks [I, N, HW]); row r uses mask set r mod I.
    """
    terms = []
    for maps, regions in records:
        for row, row_maps in enumerate(maps):
            for a, region in zip(row_maps, regions[row % regions.shape[0]]):
                size = region.sum()
                if size == 0:  # the object vanished at this layer size: nothing to anchor
                    continue
                share = a / (a.sum() + eps)
                outside = 1.0 - (share * region).sum()
                inside = a * region / ((a * region).sum() + eps)
                uneven = 0.5 * ((inside - region / size).abs() * region).sum()
                terms.append(outside + uneven)
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean()


class Recording:
    """An observer that keeps what it is shown only inside ``with observer.recording() as records:``."""

    records: list | None = None

    @contextlib.contextmanager
    def recording(self):
        self.records = []
        try:
            yield self.records
        finally:
            self.records = None


class AttentionRecorder(Recording):
    """``CrossAttentionObserver``: while recording, keep (a_i maps, region masks) of every downsampled layer.

    The maps come from the base keys alone (the first ``tokens`` keys), without RGB-CAM's bias.
    """

    def __init__(self, spans, tokens: int):
        self.spans = tuple(spans)
        self.tokens = tokens

    def observe(self, query, keys, bias, masks, extra_options) -> None:
        if self.records is None:
            return
        latent = extra_options["original_shape"]
        if query.shape[2] >= int(latent[-2]) * int(latent[-1]):  # full-resolution layers: costly, little semantics
            return
        self.records.append((span_attention(query, keys[:, :, : self.tokens], self.spans), masks.flatten(2)))


@contextlib.contextmanager
def differentiable_weights(module: torch.nn.Module | None):
    """Let gradients flow to the input through ``module`` while its weights take none.

    ComfyUI runs nodes under ``torch.inference_mode()``, so its weights can be inference
    tensors, which autograd refuses to save: those are lent as normal copies inside the
    block. Weights that require grad are switched off for the block (no weight gradients kept).
    """
    swapped, frozen = [], []
    for owner in module.modules() if isinstance(module, torch.nn.Module) else ():
        for name, parameter in list(owner.named_parameters(recurse=False)):
            if parameter.is_inference():
                swapped.append((owner, name, parameter))
                setattr(owner, name, torch.nn.Parameter(parameter.clone(), requires_grad=False))
            elif parameter.requires_grad:
                frozen.append(parameter.requires_grad_(False))
    try:
        yield
    finally:
        for owner, name, parameter in swapped:
            setattr(owner, name, parameter)
        for parameter in frozen:
            parameter.requires_grad_(True)


def normal_tensors(value):
    """``value`` with every inference tensor in its dicts, lists and tuples copied to a normal one."""
    if isinstance(value, torch.Tensor):
        return value.clone() if value.is_inference() else value
    if isinstance(value, dict):
        return {key: normal_tensors(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(normal_tensors(item) for item in value)
    return value


@contextlib.contextmanager
def fresh_program_cache(program):
    """Give ``program`` an empty cache for a differentiable forward, then put the old one back.

    Grids cached during an inference-mode call are inference tensors, which autograd cannot save.
    """
    if program is None:
        yield
        return
    kept, program.cache = program.cache, {}
    try:
        yield
    finally:
        program.cache = kept


class LatentAnchoring:
    """Model-function wrapper: before the model call at sigmas in ``window``, take ``iterations`` gradient steps.

    ``previous`` is the wrapper that was on the model before (chained, never overwritten).
    ``losses`` keeps (sigma, loss before the steps, loss in the model call after them) per guided call.
    """

    def __init__(self, recorder: AttentionRecorder, strength: float, iterations: int, window: SigmaWindow, previous=None):
        self.recorder = recorder
        self.strength, self.iterations = strength, iterations
        self.window = window
        self.previous = previous
        self.losses: deque[tuple[float, float, float]] = deque(maxlen=1000)  # the latest guided calls

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options: clones share the wrapper, as they share the program's terms.
        return self

    def __call__(self, apply_model, args):
        def run(latent, call_args):
            if self.previous is not None:
                return self.previous(apply_model, dict(call_args, input=latent))
            return apply_model(latent, call_args["timestep"], **call_args["c"])

        sigma = float(args["timestep"].max())
        if self.strength == 0 or self.iterations == 0 or not self.window.active(args["timestep"]):
            return run(args["input"], args)
        program = args["c"].get("transformer_options", {}).get(PROGRAM_KEY)
        model = getattr(apply_model, "__self__", None)  # ComfyUI passes the bound BaseModel.apply_model
        latent, before = self.anchor(run, args, sigma, program, model)
        if before is None:  # this call holds no target rows (e.g. an uncond-only batch)
            return run(latent, args)
        with self.recorder.recording() as records:
            out = run(latent, args)
        self.losses.append((sigma, before, float(anchoring_loss(records))))
        return out

    def anchor(self, run, args, sigma: float, program, model) -> tuple[torch.Tensor, float | None]:
        """``iterations`` normalised gradient steps on the latent; returns it and the loss before them."""
        x, chunks, first = args["input"], len(args["cond_or_uncond"]), None
        layout = args["c"].get("transformer_options", {}).get(LAYOUT_KEY)
        moved = torch.ones(chunks, dtype=torch.bool)  # the chunks that share the latent being guided
        if layout is not None:
            moved = torch.zeros(chunks, dtype=torch.bool)
            moved[(layout.branch.cpu() // (x.shape[0] // chunks)).unique()] = True
        with torch.inference_mode(False), torch.enable_grad(), differentiable_weights(model), fresh_program_cache(program):
            call_args, latent = normal_tensors(args), x.detach().clone()
            for _ in range(self.iterations):
                loss, grad = self.loss_and_gradient(run, latent.requires_grad_(True), call_args)
                if grad is None:  # no target rows in this call
                    return x, None
                first = loss if first is None else first
                grad = grad.view(chunks, -1, *grad.shape[1:])
                shared = grad[moved].sum(dim=0)
                step = torch.zeros_like(grad)
                step[moved] = self.strength * sigma * shared / shared.pow(2).mean().sqrt().clamp_min(1e-12)
                latent = (latent - step.flatten(0, 1)).detach()
        return latent.to(x.dtype), first

    def loss_and_gradient(self, run, latent, call_args) -> tuple[float, torch.Tensor | None]:
        """One forward and backward pass; no gradient when the call recorded no target rows."""
        with self.recorder.recording() as records:
            run(latent, call_args)
            loss = anchoring_loss(records)
            if not records or not loss.requires_grad:
                return float(loss.detach()), None
            grad, = torch.autograd.grad(loss, latent)
        return float(loss.detach()), grad
