"""The node protocol: everything a GPU node and the platform say to each other.

This package is the only code the web tier (``gpucloud``, ``accounts``, ``deployments``,
``inference``) and the node (``gpunode``) share. It imports neither Django nor anything of
either side. A node speaks it over one authenticated WebSocket (``/ws/workers/``):

Node → platform
    ``heartbeat``   telemetry, replica states, requests in flight, draining
    ``job.events``  ``{"job", "events": [{"i": choice, "t": text, "f": finish_reason | None}]}``;
                    an event may add ``"lp"`` (log probabilities of its text's tokens, when the job
                    asks: ``[{"token", "logprob", "top": [[token, logprob], ...]}]``) or ``"tc"``
                    (tool-call pieces, when the job has tools: ``[{"index", "id"?, "name"?,
                    "arguments"}]``)
    ``job.vectors`` ``{"job", "offset", "count", "dimensions", "data": base64 float32 LE}``
    ``job.done``    ``{"job", "usage": {"prompt_tokens", "completion_tokens"}}``
    ``job.error``   ``{"job", "message", "code", "status", "engine_fault": bool}``
    ``leaving``     the node drained and goes away

Platform → node
    ``welcome``     ``{"node", "heartbeat_interval", "protocol"}``
    ``assign``      ``{"replicas": [ReplicaSpec, ...]}``: what to load and serve
    ``job``         ``{"job", "kind": "generate" | "embed", "replica", "spec": {...}}``
    ``cancel``      ``{"job"}``: stop it (the client went away, or the job moved elsewhere)
    ``refused``     ``{"message"}``, then close code 4003: the credential is no good, stop

A node may only answer jobs the platform sent it on its own connection; the platform checks every
``job.*`` message against that and drops the rest. Jobs carry no platform secrets: an engine's
secret (an upstream's API key) is read from the node's own environment by name.
"""

from __future__ import annotations

from nodeprotocol.jobs import EmbeddingJob, GenerationJob

# Bumped whenever a message changes shape. A node speaking another version is refused at
# registration and at connect with a message naming both versions.
VERSION = 3  # 3: tools, structured outputs, logprobs and penalties in jobs and events
# Sent by the node at registration (``protocol`` in the body) and on its WebSocket (this header).
VERSION_HEADER = "x-gpucloud-protocol"

# Close code for "this node may not connect": do not reconnect.
CLOSE_REFUSED = 4003
# Close code for "this credential is unknown here" (the platform forgot the node): join again.
CLOSE_UNKNOWN = 4004

# Message types.
HEARTBEAT, LEAVING = "heartbeat", "leaving"
JOB_EVENTS, JOB_VECTORS, JOB_DONE, JOB_ERROR = "job.events", "job.vectors", "job.done", "job.error"
WELCOME, ASSIGN, JOB, CANCEL, REFUSED = "welcome", "assign", "job", "cancel", "refused"

KIND_GENERATE, KIND_EMBED = "generate", "embed"

# The engines a node may run. The same job with its seed gives the same text on the
# deterministic ones, so a stream cut by a node failure can continue on another node.
ENGINE_NAMES = ("simulated", "openai", "hf")
DETERMINISTIC_ENGINES = frozenset({"simulated"})

# Finish reasons a node may report for a choice.
FINISH_REASONS = frozenset({"stop", "length", "content_filter", "tool_calls"})

# Embedding vectors travel in messages of at most this many bytes (before base64).
VECTORS_MESSAGE_BYTES = 512 * 1024


def version_refusal(node_version: object) -> str | None:
    """The refusal message for a node that speaks another protocol version, else None."""
    if node_version == VERSION:
        return None
    return (
        f"This server speaks node protocol version {VERSION}; this node speaks version {node_version or 'unknown'}. "
        "Upgrade the node's software to the server's version and start it again."
    )


__all__ = [
    "ASSIGN",
    "CANCEL",
    "CLOSE_REFUSED",
    "CLOSE_UNKNOWN",
    "DETERMINISTIC_ENGINES",
    "ENGINE_NAMES",
    "FINISH_REASONS",
    "HEARTBEAT",
    "JOB",
    "JOB_DONE",
    "JOB_ERROR",
    "JOB_EVENTS",
    "JOB_VECTORS",
    "KIND_EMBED",
    "KIND_GENERATE",
    "LEAVING",
    "REFUSED",
    "VECTORS_MESSAGE_BYTES",
    "VERSION",
    "VERSION_HEADER",
    "WELCOME",
    "EmbeddingJob",
    "GenerationJob",
    "version_refusal",
]
