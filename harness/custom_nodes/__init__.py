"""Test-only custom node files (``*_node.py``), each linked into the test server's custom_nodes/ (harness/server.py)."""
