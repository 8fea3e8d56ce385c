"""The browser tier: ComfyUI is set up in this process before this folder's test modules import it."""
from harness.comfy_env import prepare_for_tests

prepare_for_tests()
