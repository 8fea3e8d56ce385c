"""Test support and the ComfyUI environment for the tests, the benchmarks and the scripts (not loaded by ComfyUI).

    comfy_env.py           ComfyUI set up in this process as its server sets itself up; the pack registered as
                           ``leakfree_edit``; the requirement check setup.sh runs
    random_models.py       random-weight models from ComfyUI's own classes (SD1.5, SDXL, Flux; CLIPs, VAE)
    model_files.py         the same in the real file formats, where a user's files would be
    metric_model_files.py  random-weight metric models (CLIP, DINO, SqueezeNet) in their release formats
    runner.py              ComfyUI's executor in this process, for API-format graphs
    edit_worker.py         the batch command's Ray edit worker: that executor in a Ray worker process, files in and out as bytes
    ray_cluster.py         a multi-node Ray cluster on loopback, for the Ray mode's tests and benchmark
    ale_bench.py           the ALE-Bench runner's work: ALE's protocol on a workflow, the edits run and scored
    server.py              ComfyUI's real server on loopback, in a scratch base folder; its memory sampled, /free
    browser.py             Chromium driving ComfyUI's frontend (Playwright)
    ui_workflow.py         the UI-format twin of an API-format workflow (groups, the canvas note, the opening view)
    template_cards.py      the template browser's picture of each template (scripts/thumbnails.py writes them)
    editing.py, gsam_models.py, batches.py   test material: the example edit, tiny Grounded-SAM models, batches
    fixtures.py            the pytest fixtures every tier shares (tests/conftest.py loads it)
    custom_nodes/          test-only node files the test server loads

Importing this package imports nothing of ComfyUI; the modules that need it (random_models) say so, the others
import it lazily after :func:`comfy_env.prepare_comfy`.
"""
