"""Token windows for ORE: the base prompt assembled from its objects, with exact spans.

Works on ComfyUI's tokenizer output (``{"l": [window, ...], "g": [...]}``, each
window a list of ``(token, weight[, word_id])`` tuples) without importing ComfyUI.
Building the base window from the objects' own tokens makes every span exact for
multi-token words, repeated names and weight syntax such as ``(gold:1.2)``.
"""
from __future__ import annotations

from .plan import JOINER, EditPlanError


def inner_tokens(window: list[tuple], end_token: int) -> list[tuple]:
    """The tokens between BOS and the first EOS of a window."""
    for index in range(1, len(window)):
        if window[index][0] == end_token:
            return window[1:index]
    return window[1:]


def build_base_window(
    pieces: list[list[tuple]], joiner: list[tuple], empty_window: list[tuple], node: str, what: str = "target"
) -> tuple[list[tuple], list[tuple[int, int]], int]:
    """Join object token lists with the joiner tokens into one padded window.

    ``empty_window`` is the tokenized empty prompt ([BOS, EOS, PAD, ...]): it gives
    the special tokens and the window length. Returns (window, spans, eos index).
    """
    bos, eos, pad = empty_window[0], empty_window[1], empty_window[-1]
    window, spans = [bos], []
    for index, piece in enumerate(pieces):
        if index:
            window.extend(joiner)
        spans.append((len(window), len(window) + len(piece)))
        window.extend(piece)
    length = len(empty_window)
    if len(window) + 1 > length:
        raise EditPlanError(
            f"{node}: the {what} prompts joined with '{JOINER.strip()}' are {len(window) - 1} tokens; "
            f"at most {length - 2} fit one CLIP window. Shorten the {what} prompts or edit fewer objects at once."
        )
    eos_index = len(window)
    window.append(eos)
    window.extend([pad] * (length - len(window)))
    return window, spans, eos_index


def plan_windows(tokenize, texts: list[str], node: str, lines: list[int] | None = None,
                 what: str = "target") -> tuple[dict, list[tuple[int, int]], int]:
    """Windows ``{key: [base, object_1..N, empty]}`` for one text encoder call, plus spans and base EOS.

    ``tokenize(text)`` is ComfyUI's ``clip.tokenize``; ``lines`` are the texts' edit-list lines and
    ``what`` ("target" or "source") names them in messages. Spans agree across the encoders of one
    model (SDXL's two CLIPs share the BPE vocabulary); if they ever did not, ORE would be ill-defined,
    so that is an error.
    """
    empty = tokenize("")
    joiner = tokenize(JOINER.strip())
    objects = [tokenize(text) for text in texts]
    windows, spans, eos_index = {}, None, None
    for key, (empty_window, *_) in empty.items():
        end_token = empty_window[1][0]
        own_windows = []
        for number, (text, tokenized) in enumerate(zip(texts, objects)):
            count = sum(len(inner_tokens(window, end_token)) for window in tokenized[key])
            if count > len(empty_window) - 2:
                where = f"line {lines[number]}: " if lines else ""
                raise EditPlanError(f"{node}: {where}the {what} prompt {text!r} is {count} tokens; at most {len(empty_window) - 2} "
                                    "fit one CLIP window. Shorten it.")
            own_windows.append(tokenized[key][0])
        pieces = [inner_tokens(w, end_token) for w in own_windows]
        base, key_spans, key_eos = build_base_window(pieces, inner_tokens(joiner[key][0], end_token), empty_window, node, what)
        if spans is not None and (key_spans, key_eos) != (spans, eos_index):
            raise EditPlanError(f"{node}: the text encoders of this CLIP tokenize the prompts differently; ORE needs one token layout.")
        spans, eos_index = key_spans, key_eos
        windows[key] = [base, *own_windows, empty_window]
    return windows, spans, eos_index


def first_occurrences(window: list[tuple], spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each span moved to the first place its token ids occur in ``window``, as ALE-Edit's code locates an object in the
    base prompt (ml-postech/ALE ``ale/ore.py`` L21-32, ``find_sublist_indices``): an object whose tokens also occur
    earlier (a repeated name, "car" after "red car") maps to that earlier place."""
    ids = [token[0] for token in window]
    found = []
    for start, end in spans:
        piece = ids[start:end]
        first = next(i for i in range(start + 1) if ids[i : i + len(piece)] == piece)
        found.append((first, first + len(piece)))
    return found
