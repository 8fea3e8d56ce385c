"""Test-only custom node file, linked into the test server's custom_nodes: Isolation Probe (test) records what region
isolation is about in the first model call of a sampling run, for the conditional (target) rows: the output of the
first cross-attention layer (input block 1, after every patch on it, another pack's included) and the ControlNet
residuals the UNet receives. It writes them to ``<output folder>/<name>.pt``, so that a test can compare two runs of a
graph bit for bit over HTTP. Put it last on the model, just before the sampler."""
from pathlib import Path

import folder_paths
import torch


class IsolationProbe:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",), "name": ("STRING", {"default": "probe"})}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "probe"
    CATEGORY = "testing"

    def probe(self, model, name):
        path = Path(folder_paths.get_output_directory()) / f"{name}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        record = {}
        patched = model.clone()

        def first_cross_attention(out, extra_options):
            if "attn2" not in record and tuple(extra_options["block"]) == ("input", 1):
                record["attn2"] = out.chunk(len(extra_options["cond_or_uncond"]))[extra_options["cond_or_uncond"].index(0)].float().cpu()
            return out

        previous = patched.model_options.get("model_function_wrapper")

        def first_call(apply_model, args):
            if not path.exists():
                order, control = list(args["cond_or_uncond"]), args["c"].get("control") or {}
                rows = lambda t: t.chunk(len(order))[order.index(0)].float().cpu()
                record["control"] = {kind: [rows(t) for t in residuals if t is not None] for kind, residuals in control.items()}
            out = previous(apply_model, args) if previous is not None else apply_model(args["input"], args["timestep"], **args["c"])
            if not path.exists():
                torch.save(record, path)
            return out

        patched.set_model_attn2_output_patch(first_cross_attention)
        patched.set_model_unet_function_wrapper(first_call)
        return (patched,)


NODE_CLASS_MAPPINGS = {"TestIsolationProbe": IsolationProbe}
