"""ALE-Edit's official rules that need ComfyUI: the simple scheduler gives LCM's 15 of 50 timesteps (the other rules
are pinned in tests/unit/test_ale_rules.py)."""
import numpy as np


def test_simple_schedule_gives_lcms_15_of_50_timesteps(models):
    """LCMScheduler.set_timesteps(15, original_inference_steps=50): 999, 939, 879, 799, ..., 139, 79; ComfyUI's simple
    scheduler on the lcm model sampling (ModelSamplingDiscrete 'lcm', 50 timesteps) gives the same list."""
    import comfy.samplers
    from comfy_extras.nodes_model_advanced import ModelSamplingDiscrete

    model = ModelSamplingDiscrete().patch(models.unet(), "lcm", False)[0]
    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "simple", 15)
    origin = np.arange(1, 51) * 20 - 1  # 19, 39, ..., 999
    official = origin[::-1][np.floor(np.linspace(0, 50, 15, endpoint=False)).astype(int)]
    assert [int(sampling.timestep(s)) for s in sigmas[:-1]] == official.tolist()
    assert official[:3].tolist() == [999, 939, 879] and official[-2:].tolist() == [139, 79]
    sgm = comfy.samplers.calculate_sigmas(sampling, "sgm_uniform", 15)
    assert [int(sampling.timestep(s)) for s in sgm[:-1]] != official.tolist()
