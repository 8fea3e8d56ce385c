"""Example workflows as files: each UI graph has its API twin, and nothing else is a template."""


from pipelines.comfyui import ROOT

API_WORKFLOWS = sorted((ROOT / "workflows" / "api").glob("*.json"))


def test_every_ui_workflow_has_an_api_twin_and_nothing_else_is_a_template():
    ui = {p.stem for p in (ROOT / "workflows").glob("*.json")}
    assert ui == {p.stem for p in API_WORKFLOWS}
    for folder in ("example_workflows", "example", "examples", "workflow"):  # ComfyUI would list or serve these as templates too
        assert not (ROOT / folder).exists(), f"{folder}/ would shadow or add to workflows/ in the template browser"
