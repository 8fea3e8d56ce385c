"""Artist pipelines: batches of edits sent to ComfyUI servers over ComfyUI's own HTTP + websocket API, or run by
edit workers on a Ray cluster.

    jobs.py          jobs from manifests (JSONL, CSV) and ALE-Bench folders
    slots.py         where a job's image, masks, edit list and settings go in any API-format workflow
    client.py        ComfyUI's HTTP + websocket API, and its error messages in words
    comfyui.py       where the ComfyUI checkout is, and one started as a child process on a loopback port
    dispatch.py      one prompt per server at a time, retries, lost servers; the exactly-once results log, the rows,
                     warnings and progress both modes share
    ray_dispatch.py  the Ray mode's driver: edit workers placed and restarted by Ray, jobs handed out, results written
    cli.py           the batch command (scripts/batch_edit.py is its entry point)

Standard library and aiohttp (and Ray, optional, for --ray) only: nothing here imports torch, ComfyUI or the pack's
nodes, integration, attention or masking (tests/unit/test_layout.py checks it); the servers, or the Ray workers
(harness/edit_worker.py, imported in their own processes by import path), do the work.
"""
