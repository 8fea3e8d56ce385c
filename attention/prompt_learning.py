"""Dynamic Prompt Learning (DPL; Wang et al., "Dynamic Prompt Learning: Addressing Cross-Attention Leakage for
Text-Based Image Editing", NeurIPS 2023; code: wangkai930418/DPL, ``pipelines/null_attend_textinv_pipeline.py``)
on the source branch of an edit: before each sampling step, the source objects' token embeddings are optimised
so that each object's cross-attention lands on its object, and on nothing else.

At step i, with A [h, w, T] the source prompt's cross-attention at the loss grid (DPL: the 16x16 layers at
512 px) averaged over those layers and their heads, a_i = sum over object i's learned tokens of A[..., t],
and bg the background mask at that grid:

    attend     L_max = max_i max(0, 1 - max_p G * softmax_t(100 A[..., 1:T-1])[.., object i])   (Attend-and-Excite;
                                G a 3x3 Gaussian, sigma 0.5, reflect padding)
    background L_bg  = mean_i cos(a_i, bg)
    disjoint   L_dis = mean_{i > j} cos(a_i, a_j)          (0 with one object)
    L = w_max L_max + w_bg L_bg + w_dis L_dis              (DPL: 1, 0.05, 0.05)

Up to ``iterations`` (DPL: 21) AdamW steps (lr 1e-3, weight decay 0.01, a fresh optimiser each sampling
step) on the learned rows only, stopping as soon as L_max < beta_max e^(-i/alpha_max), L_bg <
beta_bg e^(-i/alpha_bg) and L_dis < beta_dis e^(-i/alpha_dis) (DPL: alpha 25, 50, 25; beta 0.3, 0.7, 0.9),
with i on DPL's 50-step scale: i = step * 50 / N for step ``step`` of an N-step run (``_3_dpl_inv.py`` runs 50
DDIM steps; with 15 steps the last threshold is DPL's 50th, not its 15th). A loss whose weight is 0 counts as 0,
as in DPL; with one object only the background term applies (the paper's single-object rule). The model call of
the step then uses the source prompt encoded with the learned rows (SDXL: its pooled output too); the rows carry
over to the next step. A step whose source rows are pure noise (the dual branch's first step from noise: DPL
starts from the image's DDIM inversion) learns nothing. A loss that is not finite stops the step's learning, with
a warning, and keeps the rows of the last finite pass.

Where a target keeps a learned source word ("dog -> dog wearing a hat"), its token takes the same learned row
(DPL's edit prompt holds the same placeholder token): the target rows of the call are encoded with it.

The attention comes from the region attention program: :class:`SourceAttentionRecorder` is one of its
context observers. Pure torch: the text encoder, the model and the progress bar arrive as callables.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F

from ..masking.ops import downsampled_grid
from .anchoring import Recording, fresh_program_cache, normal_tensors
from .dual_branch import step_index
from .localisation import attention_probabilities
from .ore import object_restricted
from .region_attention import PROGRAM_KEY, layer_size, target_rows
from .self_attention import LAYOUT_KEY, no_branches

SOFTMAX_SCALE = 100.0  # Attend-and-Excite's temperature on the text-token softmax
SMOOTHING = (3, 0.5)  # Gaussian kernel size and sigma (Attend-and-Excite, DPL's smooth_op)
CACHED_PLANS, CACHED_STEPS = 8, 512  # how many learning setups, and steps of each, the cache keeps
REFERENCE_STEPS = 50  # DPL's DDIM steps: its thresholds decay over these
log = logging.getLogger("LeakFreeEdit")


@dataclass(frozen=True)
class LossTerm:
    """One loss: its weight and its early-stop threshold beta * exp(-step / alpha)."""

    weight: float
    alpha: float
    beta: float

    def threshold(self, step: int) -> float:
        return self.beta * math.exp(-step / self.alpha)


@dataclass(frozen=True)
class LearningSettings:
    """DPL's optimisation; the defaults are its script's (``DPL.sh``)."""

    iterations: int = 21
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    attend: LossTerm = LossTerm(1.0, 25.0, 0.3)
    background: LossTerm = LossTerm(0.05, 50.0, 0.7)
    disjoint: LossTerm = LossTerm(0.05, 25.0, 0.9)
    grid_factor: int = 4  # the loss layers: this many times below the latent (DPL: 16x16 at 512 px)

    def terms(self) -> tuple[LossTerm, LossTerm, LossTerm]:
        return self.attend, self.background, self.disjoint

    def for_objects(self, count: int) -> "LearningSettings":
        """DPL's single-object rule: with one object only the background term applies (the attend term is off, and
        the disjointness term has no pair)."""
        return self if count > 1 else replace(self, attend=replace(self.attend, weight=0.0))

    def thresholds(self, step: int, steps: int) -> tuple[float, float, float]:
        """The early-stop thresholds of step ``step`` of ``steps``, on DPL's 50-step scale: i_eff = step * 50 / steps."""
        scaled = step * REFERENCE_STEPS / max(1, steps)
        return tuple(term.threshold(scaled) for term in self.terms())


def smoothing_kernel(size: int = SMOOTHING[0], sigma: float = SMOOTHING[1]) -> torch.Tensor:
    """The 2-D kernel ``[size, size]`` of Attend-and-Excite's ``GaussianSmoothing`` as its code (and DPL's) writes it:
    the product over both axes of exp(-((x - mean) / (2 sigma))^2), normalised to sum 1."""
    x = torch.arange(size, dtype=torch.float32)
    line = torch.exp(-(((x - (size - 1) / 2) / (2 * sigma)) ** 2))
    kernel = line[:, None] * line[None, :]
    return kernel / kernel.sum()


def token_attention(attention: torch.Tensor, tokens) -> torch.Tensor:
    """a_i ``[N, h, w]``: the attention ``[h, w, T]`` summed over each object's learned token positions."""
    return torch.stack([attention[..., list(positions)].sum(dim=-1) for positions in tokens])


def attend_loss(attention: torch.Tensor, tokens) -> torch.Tensor:
    """L_max: max over objects of max(0, 1 - smoothed peak of the object's share of the text-token softmax)."""
    text = (SOFTMAX_SCALE * attention[..., 1:-1]).softmax(dim=-1)  # BOS and the last token left out, as DPL
    shares = token_attention(F.pad(text, (1, 0)), tokens)  # a zero column puts token t back at index t
    padded = F.pad(shares.unsqueeze(1), (1, 1, 1, 1), mode="reflect")
    kernel = smoothing_kernel().to(padded)
    peaks = F.conv2d(padded, kernel.view(1, 1, *kernel.shape)).flatten(1).amax(dim=1)
    return (1.0 - peaks).clamp_min(0.0).max()


def background_loss(maps: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """L_bg: mean over objects of cos(a_i, bg)."""
    return F.cosine_similarity(maps.flatten(1), background.flatten().unsqueeze(0).to(maps)).mean()


def disjoint_loss(maps: torch.Tensor) -> torch.Tensor:
    """L_dis: mean over pairs i > j of cos(a_i, a_j); 0 for a single object."""
    flat = maps.flatten(1)
    pairs = torch.tril_indices(flat.shape[0], flat.shape[0], offset=-1, device=flat.device)
    if pairs.shape[1] == 0:
        return flat.sum() * 0.0
    return F.cosine_similarity(flat[pairs[0]], flat[pairs[1]]).mean()


def dpl_losses(attention: torch.Tensor, tokens, background: torch.Tensor | None, settings: LearningSettings) -> torch.Tensor:
    """(L_max, L_bg, L_dis) ``[3]`` for one row's attention ``[h, w, T]``; a term of weight 0 is 0."""
    maps = token_attention(attention, tokens)
    zero = attention.sum() * 0.0
    terms = (
        attend_loss(attention, tokens) if settings.attend.weight else zero,
        background_loss(maps, background) if settings.background.weight and background is not None else zero,
        disjoint_loss(maps) if settings.disjoint.weight else zero,
    )
    return torch.stack(terms)


def grid_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A 0/1 mask ``[..., H, W]`` at a layer's grid: a cell is 1 where any of its pixels is (DPL resizes its binary
    background image to 16x16 and takes every nonzero cell)."""
    flat = mask.float().reshape(-1, 1, *mask.shape[-2:])
    return F.adaptive_max_pool2d(flat, (height, width)).reshape(*mask.shape[:-2], height, width)


class SourceAttentionRecorder(Recording):
    """``CrossAttentionCallObserver``: while recording, keep softmax(q k^T / sqrt(d)) averaged over heads,
    ``[B, h, w, T]``, of every cross-attention layer at the loss grid (``factor`` times below the latent)."""

    def __init__(self, factor: int):
        self.factor = factor

    def observe_call(self, query, keys, extra_options) -> None:
        if self.records is None:
            return
        height, width = layer_size(extra_options)
        latent = extra_options["original_shape"]
        if (height, width) != downsampled_grid((int(latent[-2]), int(latent[-1])), self.factor):
            return
        probs = attention_probabilities(query, keys).float().mean(dim=1)
        self.records.append(probs.view(probs.shape[0], height, width, -1))


@dataclass
class LearnedStep:
    """What one sampling step of prompt learning did: ``losses`` ``[passes, 3]`` (L_max, L_bg, L_dis) before each
    update, ``thresholds`` (the three early-stop thresholds), ``stopped`` when they ended the loop early,
    ``cached`` when the embeddings came from the cache instead, ``skipped``/``diverged`` as below."""

    step: int
    sigma: float
    losses: torch.Tensor
    thresholds: tuple[float, float, float]
    stopped: bool
    cached: bool = False
    skipped: bool = False  # the step started from pure noise: nothing learned, the rows went on as they entered
    diverged: bool = False  # a loss was not finite (nan/inf): learning stopped, the rows of the last finite pass kept


@dataclass
class _CachedStep:
    steps: int
    sigma: float
    latent: torch.Tensor  # the source rows' input of the model call
    entering: tuple[torch.Tensor, ...]
    learned: tuple[torch.Tensor, ...]
    record: LearnedStep


_CACHE: "OrderedDict[object, list[_CachedStep]]" = OrderedDict()


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to float round-off (x_s in the dual branch is recomputed from the target's latent each step)."""
    return a.shape == b.shape and torch.allclose(a.detach().float().cpu(), b.detach().float().cpu(), rtol=1e-4, atol=1e-4)


def cached_step(key, steps: int, sigma: float, latent: torch.Tensor, entering) -> _CachedStep | None:
    for entry in _CACHE.get(key, ()):
        if (entry.steps == steps and math.isclose(entry.sigma, sigma, rel_tol=1e-6) and _same(entry.latent, latent)
                and all(map(_same, entry.entering, entering))):
            _CACHE.move_to_end(key)
            return entry
    return None


def store_step(key, entry: _CachedStep) -> None:
    steps = _CACHE.setdefault(key, [])
    steps.append(entry)
    del steps[:-CACHED_STEPS]
    _CACHE.move_to_end(key)
    while len(_CACHE) > CACHED_PLANS:
        _CACHE.popitem(last=False)


@dataclass
class LearningRun:
    """One sampling run: the learned rows of each step so far (the next step starts from them) and its progress bar."""

    sigmas: tuple[float, ...]
    learned: dict = field(default_factory=dict)  # step -> learned rows
    seen: bool = False  # a call of this run held source rows
    last_step: int = 0
    progress: object = None

    @property
    def steps(self) -> int:
        return max(1, len(self.sigmas) - 1)


@dataclass(frozen=True)
class SourcePrompt:
    """The source prompt DPL learns on: ``encode(rows) -> ([1, T, C], pooled [1, P] or None)`` its substituted encoding
    with the learned rows (differentiable) and its pooled output, ``initial`` the rows' starting values (the nouns'
    embeddings), ``reference`` ``[T, C]`` and ``reference_pooled`` what the sampler's source conditioning holds,
    ``tokens`` each object's learned positions in the window."""

    encode: Callable
    initial: tuple[torch.Tensor, ...]
    reference: torch.Tensor
    tokens: tuple[tuple[int, ...], ...]
    reference_pooled: torch.Tensor | None = None


@dataclass(frozen=True)
class SharedTarget:
    """The target prompt with the learned rows where it keeps a learned source word: ``encode(rows)`` -> (base
    ``[T, C]``, object windows ``[N, T, C]``, empty prompt ``[T, C]``, pooled or None); ``reference``/``reference_pooled``
    what the sampler's target conditioning holds, ``spans``/``eos`` the objects' spans and the EOS in its base window."""

    encode: Callable
    reference: torch.Tensor
    reference_pooled: torch.Tensor | None
    spans: tuple[tuple[int, int], ...]
    eos: int


def with_pooled(y: torch.Tensor | None, rows, reference: torch.Tensor | None, pooled: torch.Tensor | None) -> torch.Tensor | None:
    """SDXL's ``y`` (``[B, P + ...]``: the pooled text output first, then the size embeddings) with the pooled part of
    ``rows`` set to ``pooled`` where it holds ``reference``; anything else (SD1.5: no ``y``) unchanged."""
    if y is None or pooled is None or reference is None or y.shape[-1] < reference.shape[-1]:
        return y
    width = reference.shape[-1]
    if not _same(y[rows, :width], reference.expand(len(y[rows]), -1)):
        return y
    y = y.clone()
    y[rows, :width] = pooled.to(y).expand(len(y[rows]), -1)
    return y


class PromptLearning:
    """Model-function wrapper: in every model call holding source rows (their context is the source prompt), learn
    the rows for this step (or take them from the cache), then run the call with the learned source encoding, and
    the target rows with the target encoding that shares them (``target``, None when no target keeps a learned word).

    ``background`` ``[I, H, W]`` (1 = background, one per image or one for all; None without the term),
    ``lend(model)`` a context manager that makes the text encoder and ``model`` differentiable for a step,
    ``progress(total)`` a progress bar with ``update_absolute``, ``error`` the exception to raise, ``key`` what
    identifies the model, prompt and settings in the cache, ``previous`` the wrapper that was on the model.
    """

    def __init__(self, source: SourcePrompt, settings: LearningSettings, recorder: SourceAttentionRecorder,
                 background: torch.Tensor | None, lend, progress, error, key, node: str, previous=None,
                 target: SharedTarget | None = None):
        self.source, self.target, self.recorder = source, target, recorder
        self.settings = settings.for_objects(len(source.tokens))
        self.background = background
        self._background_grids: dict[tuple[int, int], torch.Tensor] = {}
        self.lend, self.progress, self.error = lend, progress, error
        self.key, self.node, self.previous = key, node, previous
        self.run: LearningRun | None = None
        self.history: deque[LearnedStep] = deque(maxlen=1000)  # the latest steps, learned or cached

    def __deepcopy__(self, memo):
        # ModelPatcher.clone() deep-copies model_options: clones share the wrapper, as they share the program's terms.
        return self

    def __call__(self, apply_model, args):
        options = args["c"].get("transformer_options", {})
        sigmas = options.get("sample_sigmas")
        sigma = float(args["timestep"].max())
        step = step_index(sigmas.float().cpu(), sigma) if sigmas is not None else 0
        run = self._run(sigmas, step)
        rows = target_rows(args["c"]["c_crossattn"], self.source.reference.to(args["c"]["c_crossattn"]))
        if rows.numel() == 0:
            if step > 0 and not run.seen:
                raise self.error(
                    f"{self.node}: no row of the sampler's batch carries the source prompt of the edit plan, so there is "
                    "nothing to learn on. Connect this MODEL to the Dual-Branch Edit Guider with Object-Restricted Encode's "
                    "'source' output as its source, and encode with the same CLIP that goes into this node.")
            return self._forward(apply_model, args)
        run.seen = True
        if self.settings.iterations > 0:
            entering = run.learned.get(step - 1, self.source.initial)
            layout = options.get(LAYOUT_KEY)
            if layout is not None and layout.pure_noise:
                learned = self._skipped(step, sigma, run.steps, entering)
            else:
                learned = self._learned(apply_model, args, rows, step, run.steps, sigma, entering)
            run.learned[step] = learned
            if run.progress is not None:
                run.progress.update_absolute((step + 1) * self.settings.iterations)
            args = self._with_learned(args, rows, learned)
        return self._forward(apply_model, args)

    def _forward(self, apply_model, args):
        if self.previous is not None:
            return self.previous(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def _run(self, sigmas, step: int) -> LearningRun:
        """The current run; a new one when the schedule changes or the steps start over (a re-queued graph)."""
        schedule = tuple(float(s) for s in sigmas) if sigmas is not None else ()
        if self.run is None or self.run.sigmas != schedule or step < self.run.last_step:
            self.run = LearningRun(sigmas=schedule)
            if self.settings.iterations > 0:
                self.run.progress = self.progress(self.run.steps * self.settings.iterations)
        self.run.last_step = step
        return self.run

    def _skipped(self, step: int, sigma: float, steps: int, entering) -> tuple[torch.Tensor, ...]:
        """A step whose source rows are pure noise (the guider's first step from noise; DPL starts from the DDIM
        inversion of the image instead): nothing to learn from, the rows go on as they entered."""
        log.info("%s: step %d starts from pure noise (the guider's start = noise), so it learns nothing; learning begins at "
                 "the next step.", self.node, step)
        no_passes = torch.zeros(0, 3)
        self.history.append(LearnedStep(step, sigma, no_passes, self.settings.thresholds(step, steps), False, skipped=True))
        return entering

    def _with_learned(self, args, rows, learned):
        """``args`` with the source rows' context (and SDXL's pooled output) encoded with the learned rows, repeated as
        the context is; the target rows likewise where the target keeps a learned word (and, with RGB-CAM, the ORE
        embeddings of the call assembled from the same encodings)."""
        c = dict(args["c"])
        original = c["c_crossattn"]
        context = original.clone()
        repeat = lambda window: window.to(context).repeat(context.shape[1] // window.shape[0], 1)
        with torch.no_grad():
            encoded, pooled = self.source.encode(learned)
            context[rows] = repeat(encoded[0])
            c["y"] = with_pooled(c.get("y"), rows, self.source.reference_pooled, pooled)
            targets = target_rows(original, self.target.reference.to(original)) if self.target is not None else ()
            if len(targets):
                base, own, empty, pooled = self.target.encode(learned)
                context[targets] = repeat(base)
                c["y"] = with_pooled(c["y"], targets, self.target.reference_pooled, pooled)
                options = c.get("transformer_options", {})
                program = options.get(PROGRAM_KEY)
                if program is not None and program.cross is not None:
                    ore = object_restricted(base, own, list(self.target.spans), self.target.eos, program.cross.embeddings.eos_mode, empty)
                    program = program.with_cross(replace(program.cross, embeddings=ore))
                    c["transformer_options"] = dict(options, **{PROGRAM_KEY: program})
        if c["y"] is None:
            del c["y"]
        c["c_crossattn"] = context
        return dict(args, c=c)

    def _learned(self, apply_model, args, rows, step: int, steps: int, sigma: float, entering) -> tuple[torch.Tensor, ...]:
        latent = args["input"][rows].detach()
        hit = cached_step(self.key, steps, sigma, latent, entering)
        if hit is not None:
            self.history.append(replace(hit.record, step=step, cached=True))
            return hit.learned
        learned, record = self.learn(apply_model, args, rows, step, steps, entering)
        store_step(self.key, _CachedStep(steps, sigma, latent.cpu(), tuple(t.cpu() for t in entering), learned, record))
        self.history.append(record)
        return learned

    def learn(self, apply_model, args, rows, step: int, steps: int, entering) -> tuple[tuple[torch.Tensor, ...], LearnedStep]:
        """DPL's inner loop for step ``step`` of ``steps`` on the source rows ``rows`` of the call ``args``."""
        settings = self.settings
        thresholds = settings.thresholds(step, steps)
        model = getattr(apply_model, "__self__", None)  # ComfyUI passes the bound BaseModel.apply_model
        program = args["c"].get("transformer_options", {}).get(PROGRAM_KEY)
        seen, stopped, diverged = [], False, False
        with torch.inference_mode(False), torch.enable_grad(), self.lend(model), fresh_program_cache(program):
            x, timestep, conditioning = normal_tensors(source_call(args, rows))
            rows_learned = [t.detach().clone().requires_grad_(True) for t in entering]
            finite = tuple(t.detach().clone() for t in entering)  # the rows of the last pass whose losses were finite
            optimiser = torch.optim.AdamW(rows_learned, lr=settings.learning_rate, weight_decay=settings.weight_decay)
            for _ in range(settings.iterations):
                context, pooled = self.source.encode(rows_learned)
                call = dict(conditioning, y=with_pooled(conditioning.get("y"), slice(None), self.source.reference_pooled, pooled))
                losses = self.losses(apply_model, x, timestep, context.to(x), {k: v for k, v in call.items() if v is not None})
                seen.append(losses.detach().cpu())
                if not torch.isfinite(losses).all():
                    diverged = True
                    break
                finite = tuple(t.detach().clone() for t in rows_learned)
                if all(float(value) < limit for value, limit in zip(losses.detach(), thresholds)):
                    stopped = True
                    break
                optimiser.zero_grad()
                sum(term.weight * loss for term, loss in zip(settings.terms(), losses)).backward()
                optimiser.step()
        learned = tuple(t.detach() for t in rows_learned)
        if diverged or not all(torch.isfinite(t).all() for t in learned):
            diverged = True
            learned = finite
            log.warning("%s: at step %d a loss or a learned row is not finite (nan/inf) after %d passes; learning stops for this "
                        "step and keeps the rows of the last finite pass. A smaller learning_rate avoids it.", self.node, step, len(seen))
        record = LearnedStep(step, float(timestep.max()), torch.stack(seen), thresholds, stopped, diverged=diverged)
        return learned, record

    def losses(self, apply_model, x, timestep, context, conditioning) -> torch.Tensor:
        """(L_max, L_bg, L_dis), averaged over the rows, of one forward pass of the source rows with ``context``."""
        with self.recorder.recording() as records:
            apply_model(x, timestep, c_crossattn=context.expand(x.shape[0], -1, -1), **conditioning)
            if not records:
                raise self.error(
                    f"{self.node}: no cross-attention layer {self.settings.grid_factor}x below the latent was recorded: either "
                    "this model has no such level (choose another attention_grid) or a node after it replaced the pack's "
                    "attention patch (put Dynamic Prompt Learning last before the guider).")
            attention = torch.stack(records).mean(dim=0)  # [R, h, w, T]: over the loss layers (and their heads)
        background = self._background_at(*attention.shape[1:3], attention.device)
        rows = [dpl_losses(a, self.source.tokens, None if background is None else background[r % background.shape[0]], self.settings)
                for r, a in enumerate(attention)]
        return torch.stack(rows).mean(dim=0)

    def _background_at(self, height: int, width: int, device) -> torch.Tensor | None:
        """The background mask at the loss grid, made once per grid size (every pass of every step reads it)."""
        if self.background is None:
            return None
        if (height, width) not in self._background_grids:
            self._background_grids[height, width] = grid_mask(self.background, height, width)
        return self._background_grids[height, width].to(device)


def source_call(args: dict, rows) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(input, timestep, the other conditioning) of a model call restricted to ``rows`` (one chunk of the batch).

    Batch tensors of the conditioning (and of a ControlNet's output) are sliced; the transformer options say the
    rows are one conditional chunk, and inside the dual branch an empty branch layout keeps the target terms off.
    """
    x = args["input"]
    batch = x.shape[0]
    conditioning = {name: _rows_of(value, rows, batch) for name, value in args["c"].items() if name not in ("c_crossattn", "transformer_options")}
    options = dict(args["c"].get("transformer_options", {}))
    chunks = len(args.get("cond_or_uncond") or options.get("cond_or_uncond") or [0])
    chunk = int(torch.as_tensor(rows).flatten()[0]) // max(1, batch // chunks)
    for name in ("cond_or_uncond", "uuids"):
        if isinstance(options.get(name), list) and len(options[name]) == chunks:
            options[name] = [options[name][chunk]]
    if isinstance(options.get("sigmas"), torch.Tensor) and options["sigmas"].shape[0] == batch:
        options["sigmas"] = options["sigmas"][rows]
    if LAYOUT_KEY in options:
        options[LAYOUT_KEY] = no_branches(x.device)
    conditioning["transformer_options"] = options
    return x[rows].detach(), args["timestep"][rows].detach(), conditioning


def _rows_of(value, rows, batch: int):
    """``value`` with every tensor of the batch's length (in dicts, lists, tuples) cut to ``rows``."""
    if isinstance(value, torch.Tensor):
        return value[rows] if value.ndim and value.shape[0] == batch else value
    if isinstance(value, dict):
        return {name: _rows_of(item, rows, batch) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rows_of(item, rows, batch) for item in value)
    return value
