"""A thin client of ComfyUI's own HTTP + websocket API.

The endpoints are those of ComfyUI's ``server.py`` (the ones the app and every ComfyUI orchestrator use):
``POST /prompt`` (with our own ``prompt_id``), ``GET /ws?clientId=`` (progress and the end of each prompt),
``GET /history/{prompt_id}``, ``GET /view``, ``POST /upload/image``, ``POST /interrupt`` (targeted by
``prompt_id``), ``GET/POST /queue`` and ``GET /system_stats``. The client imports neither torch nor ComfyUI:
the server does the work.
"""
from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass

import aiohttp

END_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class ServerLost(Exception):
    """The server stopped answering: connection refused or reset, a timeout, the websocket closed."""


class PromptRefused(Exception):
    """``POST /prompt`` refused the graph (validation failed); the message is ComfyUI's, node by node."""


def reason(error: Exception) -> str:
    """Why a request failed, in words: 'connection refused', 'no answer in time', 'server disconnected'."""
    if isinstance(error, aiohttp.ClientConnectorError) and getattr(error.os_error, "errno", None):
        return os.strerror(error.os_error.errno).lower()
    if isinstance(error, asyncio.TimeoutError):
        return "no answer in time"
    return f"{type(error).__name__} {error}".rstrip()


def validation_message(error: dict, node_errors: dict) -> str:
    """ComfyUI's answer to an invalid prompt, as one line: the error, then each failing node's messages."""
    details = "; ".join(
        f"node {node} ({info['class_type']}): "
        + ", ".join(e["message"] + (f" ({e['details']})" if e.get("details") else "") for e in info["errors"])
        for node, info in node_errors.items())
    return f"{error['message']}: {details or error.get('details', '')}"


def execution_message(data: dict) -> str:
    """An ``execution_error`` event as the app's error dialog names it: the node, then the node's own message."""
    return f"{data['node_type']} (node {data['node_id']}): {data['exception_message']}".rstrip()


@dataclass
class Outcome:
    """How a prompt ended: 'success' (``entry`` is its /history entry), 'error' or 'interrupted' (``message``)."""

    status: str
    entry: dict
    message: str = ""


def outcome_of(entry: dict | None) -> Outcome | None:
    """The outcome recorded in a /history entry, or None while the prompt has not finished."""
    status = (entry or {}).get("status") or {}
    if status.get("status_str") == "success" and status.get("completed"):
        return Outcome("success", entry)
    if status.get("status_str") == "error":
        for event, data in status.get("messages", []):
            if event == "execution_error":
                return Outcome("error", entry, execution_message(data))
            if event == "execution_interrupted":
                return Outcome("interrupted", entry, f"interrupted on the server at node {data.get('node_id')}")
        return Outcome("error", entry, "the server reported an error without a message")
    return None


class ComfyClient:
    """One ComfyUI server, spoken to over its HTTP API and one websocket (``client_id``: whose events we get)."""

    def __init__(self, url: str, session: aiohttp.ClientSession, client_id: str, timeout: float = 60):
        self.url = url.rstrip("/")
        self.name = self.url.split("://", 1)[-1]
        self.client_id = client_id
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout, 10), sock_read=timeout)
        self._socket: aiohttp.ClientWebSocketResponse | None = None

    async def _call(self, method: str, path: str, **kwargs) -> aiohttp.ClientResponse:
        try:
            response = await self._session.request(method, self.url + path, timeout=self._timeout, **kwargs)
            await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise ServerLost(f"{method} {path}: {reason(error)}") from error
        if response.status >= 500:
            raise ServerLost(f"{method} {path}: HTTP {response.status}")
        return response

    async def _answer(self, method: str, path: str, ok=(200,), **kwargs) -> tuple[int, object]:
        """The status and the decoded JSON body of a request answered with a status in ``ok``."""
        response = await self._call(method, path, **kwargs)
        try:
            if response.status in ok:
                return response.status, await response.json(content_type=None)
        except ValueError:
            pass
        raise ServerLost(f"{method} {path}: HTTP {response.status} {(await response.text(errors='replace'))[:200]}")

    async def _json(self, method: str, path: str, **kwargs):
        return (await self._answer(method, path, **kwargs))[1]

    async def system_stats(self) -> dict:
        return await self._json("GET", "/system_stats")

    async def missing_nodes(self, classes) -> list[str]:
        """The node classes among ``classes`` that the server does not have (its ``/object_info/{class}`` is empty)."""
        return [name for name in sorted(classes) if not await self._json("GET", f"/object_info/{name}")]

    async def upload(self, data: bytes, name: str, subfolder: str) -> str:
        """``POST /upload/image`` into ``subfolder`` of the server's input folder; returns the name LoadImage takes."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name, content_type="application/octet-stream")
        form.add_field("overwrite", "true")
        form.add_field("subfolder", subfolder)
        answer = await self._json("POST", "/upload/image", data=form)
        return f"{answer['subfolder']}/{answer['name']}" if answer.get("subfolder") else answer["name"]

    async def submit(self, graph: dict, prompt_id: str, extra_data: dict | None = None) -> None:
        """``POST /prompt``; raises PromptRefused with ComfyUI's own message when the graph does not validate."""
        payload = {"prompt": graph, "prompt_id": prompt_id, "client_id": self.client_id, "extra_data": extra_data or {}}
        status, answer = await self._answer("POST", "/prompt", ok=(200, 400), json=payload)
        if status == 400 and "error" in answer:
            raise PromptRefused(validation_message(answer["error"], answer.get("node_errors", {})))
        if status != 200 or answer.get("prompt_id") != prompt_id:
            raise ServerLost(f"POST /prompt: HTTP {status} {json.dumps(answer)[:200]}")

    async def history(self, prompt_id: str) -> dict | None:
        return (await self._json("GET", f"/history/{prompt_id}")).get(prompt_id)

    async def queue(self) -> dict:
        """``GET /queue``: ``queue_running`` and ``queue_pending``, items ``[number, prompt_id, prompt, extra_data, outputs]``."""
        return await self._json("GET", "/queue")

    async def view(self, image: dict) -> bytes:
        """The bytes of one image a prompt saved or previewed (``filename``, ``subfolder``, ``type`` from /history)."""
        response = await self._call("GET", "/view", params={k: image[k] for k in ("filename", "subfolder", "type")})
        if response.status != 200:
            raise ServerLost(f"GET /view {image['filename']}: HTTP {response.status}")
        return await response.read()

    async def cancel(self, prompt_ids: list[str]) -> None:
        """Drop our prompts from the server: pending ones leave the queue, a running one is interrupted."""
        if prompt_ids:
            await self._call("POST", "/queue", json={"delete": prompt_ids})
            for prompt_id in prompt_ids:
                await self._call("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        if self._socket is None or self._socket.closed:
            try:
                self._socket = await self._session.ws_connect(
                    f"{self.url.replace('http', 'ws', 1)}/ws?clientId={self.client_id}", timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5))
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                raise ServerLost(f"websocket: {reason(error)}") from error
        return self._socket

    async def open(self) -> None:
        """Connect the websocket before submitting, so that no event of the prompt is missed."""
        await self._connect()

    async def close(self) -> None:
        if self._socket is not None:
            await self._socket.close()

    async def wait(self, prompt_id: str, on_event=lambda event, data: None, heartbeat: float = 10) -> Outcome:
        """Follow ``prompt_id`` on the websocket until it ends; ``on_event(event, data)`` sees its progress.

        The end is read back from /history (events are not replayed after a reconnect). With no event for
        ``heartbeat`` seconds, or when the websocket closes, the server is asked where the prompt is: a
        server that does not answer, or that no longer knows the prompt, is lost.
        """
        while True:
            socket_ = await self._connect()
            try:
                message = await socket_.receive(timeout=heartbeat)
            except asyncio.TimeoutError:
                message = None
            if message is not None and message.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(message.data)
                data = event.get("data") or {}
                if isinstance(data, dict) and data.get("prompt_id") == prompt_id:
                    on_event(event.get("type"), data)
                    if event.get("type") in END_EVENTS:
                        return await self._ended(prompt_id)
                continue
            if message is not None and message.type == aiohttp.WSMsgType.BINARY:
                continue  # previews of the sampling
            if message is not None:  # the websocket closed or failed
                self._socket = None
                await asyncio.sleep(0.5)
            outcome = await self._where(prompt_id)
            if outcome is not None:
                return outcome

    async def _ended(self, prompt_id: str) -> Outcome:
        for _ in range(100):  # the server writes /history just after it sends the end of the prompt
            outcome = outcome_of(await self.history(prompt_id))
            if outcome is not None:
                return outcome
            await asyncio.sleep(0.1)
        raise ServerLost(f"prompt {prompt_id} ended but /history has no record of it")

    async def _where(self, prompt_id: str) -> Outcome | None:
        """The prompt's outcome if it ended, None while it is queued or running; ServerLost if the server forgot it."""
        outcome = outcome_of(await self.history(prompt_id))
        if outcome is None:
            queue = await self.queue()
            if not any(item[1] == prompt_id for item in queue["queue_running"] + queue["queue_pending"]):
                outcome = outcome_of(await self.history(prompt_id))  # it may have ended in between
                if outcome is None:
                    raise ServerLost(f"prompt {prompt_id} is no longer queued there (the server restarted?)")
        return outcome
