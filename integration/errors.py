"""The error every node raises for bad input: its message names the node and the fix."""


class NodeInputError(ValueError):
    """A user-facing error. ComfyUI titles its error dialog with the exception's module and name; the pack's
    module path is a folder path there, so the module is named after the pack instead."""


NodeInputError.__module__ = "LeakFreeEdit"
