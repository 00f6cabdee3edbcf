// The playground: sends a chat request with stream on to the playground's endpoint (the very view of
// POST /v1/chat/completions, authenticated by the session and the CSRF token instead of a bearer key,
// so the request is limited, metered and billed like any API call), reads the server-sent events as
// they arrive, and shows the reply, its tool calls, then tokens, time to first token, tokens per
// second and cost. "View code" shows the same request as curl and Python with the key left out.
(function () {
  "use strict";

  const form = document.getElementById("playground");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const endpoint = form.dataset.endpoint;
  const apiBase = form.dataset.apiBase;
  const csrfToken = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  const messagesList = $("pg-messages");
  const input = $("pg-input");
  const sendButton = $("pg-send");
  const stopButton = $("pg-stop");
  const errorBox = $("pg-error");
  const stats = $("pg-stats");
  const status = $("pg-status");

  // The conversation so far, as sent to the API (without the system prompt, which is read each time).
  const conversation = [];
  let controller = null;

  // --- The request ------------------------------------------------------------------------------

  function parseTools() {
    const text = $("pg-tools").value.trim();
    const problem = $("pg-tools-error");
    problem.hidden = true;
    if (!text) return [];
    let tools;
    try {
      tools = JSON.parse(text);
    } catch (error) {
      tools = null;
    }
    if (!Array.isArray(tools)) {
      problem.textContent = "Tools must be a JSON list, e.g. [{\"type\": \"function\", \"function\": {…}}].";
      problem.hidden = false;
      throw new Error("invalid tools");
    }
    return tools;
  }

  function buildRequest() {
    const messages = [];
    const system = $("pg-system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...conversation);
    const text = input.value.trim();
    if (text) messages.push({ role: "user", content: text });
    const body = { model: $("pg-model").value, messages: messages };
    const temperature = Number.parseFloat($("pg-temperature").value);
    if (Number.isFinite(temperature)) body.temperature = temperature;
    const maxTokens = Number.parseInt($("pg-max-tokens").value, 10);
    if (Number.isFinite(maxTokens)) body.max_tokens = maxTokens;
    body.stream = true;
    body.stream_options = { include_usage: true };
    if ($("pg-json").checked) body.response_format = { type: "json_object" };
    const tools = parseTools();
    if (tools.length) body.tools = tools; // sent as they are: the API says what it makes of them
    return body;
  }

  // --- The conversation on the page --------------------------------------------------------------

  function addMessage(role, text) {
    const empty = $("pg-empty");
    if (empty) empty.remove();
    const item = document.createElement("li");
    item.className = "pg-message pg-message-" + role;
    const label = document.createElement("span");
    label.className = "pg-role";
    label.textContent = role === "assistant" ? "Assistant" : "You";
    const content = document.createElement("div");
    content.className = "pg-content";
    content.textContent = text;
    item.append(label, content);
    messagesList.append(item);
    item.scrollIntoView({ block: "nearest" });
    return { item: item, content: content };
  }

  function showToolCalls(item, toolCalls) {
    const block = document.createElement("div");
    block.className = "pg-tool-calls";
    const title = document.createElement("span");
    title.className = "pg-role";
    title.textContent = "Tool calls";
    const pre = document.createElement("pre");
    pre.textContent = JSON.stringify(toolCalls, null, 2);
    block.append(title, pre);
    item.append(block);
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    status.textContent = "Error: " + message;
  }

  function formatCost(cost) {
    if (cost === undefined || cost === null) return "—";
    const value = Number(cost);
    // Small amounts keep their significant digits; the API prices to 8 places.
    return "$" + (value !== 0 && Math.abs(value) < 0.01 ? value.toFixed(8).replace(/0+$/, "") : value.toFixed(4));
  }

  function showStats(usage, ttftMs, tokensPerSecond) {
    $("pg-stat-tokens").textContent = usage
      ? usage.prompt_tokens + " in · " + usage.completion_tokens + " out"
      : "—";
    $("pg-stat-ttft").textContent = ttftMs === null ? "—" : Math.round(ttftMs) + " ms";
    $("pg-stat-tps").textContent = tokensPerSecond === null ? "—" : tokensPerSecond.toFixed(1);
    $("pg-stat-cost").textContent = formatCost(usage && usage.cost);
    stats.hidden = false;
    status.textContent =
      "Reply complete: " + $("pg-stat-tokens").textContent + ", " + $("pg-stat-cost").textContent + ".";
  }

  // --- Streaming ---------------------------------------------------------------------------------

  async function errorMessage(response) {
    const type = response.headers.get("Content-Type") || "";
    if (type.includes("json")) {
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) return body.error.message;
      } catch (error) {
        // fall through to the status line
      }
    }
    if (response.status === 403) {
      // Django's CSRF refusal is an HTML page: the page's token no longer matches the session.
      return "The request was refused (403): your session may have ended or changed. Reload the page and try again.";
    }
    return "The request failed (" + response.status + " " + response.statusText + ").";
  }

  // Merge streamed tool-call fragments by index, as OpenAI streams them.
  function mergeToolCalls(calls, fragments) {
    for (const fragment of fragments) {
      const index = fragment.index || 0;
      const call = calls[index] || (calls[index] = { id: "", type: "function", function: { name: "", arguments: "" } });
      if (fragment.id) call.id = fragment.id;
      if (fragment.type) call.type = fragment.type;
      if (fragment.function) {
        if (fragment.function.name) call.function.name += fragment.function.name;
        if (fragment.function.arguments) call.function.arguments += fragment.function.arguments;
      }
    }
  }

  async function send(event) {
    event.preventDefault();
    if (controller) return;
    errorBox.hidden = true;
    let body;
    try {
      body = buildRequest();
    } catch (error) {
      return;
    }
    const text = input.value.trim();
    if (!text && !conversation.length) {
      input.focus();
      return;
    }
    if (text) {
      addMessage("user", text);
      conversation.push({ role: "user", content: text });
      input.value = "";
    }
    const reply = addMessage("assistant", "");
    reply.item.setAttribute("aria-busy", "true");
    stats.hidden = true;
    form.dataset.state = "streaming";
    status.textContent = "Waiting for the reply…";
    sendButton.disabled = true;
    stopButton.hidden = false;
    controller = new AbortController();

    const started = performance.now();
    let firstAt = null;
    let usage = null;
    let content = "";
    const toolCalls = [];
    let failed = false;

    function onChunk(chunk) {
      if (chunk.error) {
        failed = true;
        showError(chunk.error.message || "The reply was cut short.");
        return;
      }
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice || !choice.delta) return;
      const delta = choice.delta;
      if ((delta.content || delta.tool_calls) && firstAt === null) firstAt = performance.now();
      if (delta.content) {
        content += delta.content;
        reply.content.textContent = content;
      }
      if (delta.tool_calls) mergeToolCalls(toolCalls, delta.tool_calls);
    }

    try {
      const response = await fetch(endpoint, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken, Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
        credentials: "same-origin",
      });
      if (!response.ok) {
        failed = true;
        showError(await errorMessage(response));
      } else {
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        let done = false;
        while (!done) {
          const part = await reader.read();
          if (part.done) break;
          buffer += decoder.decode(part.value, { stream: true }).replace(/\r\n/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const eventText = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            const data = eventText
              .split("\n")
              .filter((line) => line.startsWith("data:"))
              .map((line) => line.slice(5).trim())
              .join("\n");
            if (!data) continue;
            if (data === "[DONE]") {
              done = true;
              break;
            }
            onChunk(JSON.parse(data));
          }
        }
      }
    } catch (error) {
      failed = true;
      showError(error.name === "AbortError" ? "Stopped. What was sent is billed." : "The connection failed: " + error.message);
    } finally {
      controller = null;
      sendButton.disabled = false;
      stopButton.hidden = true;
      reply.item.removeAttribute("aria-busy");
    }
    const ended = performance.now();
    if (toolCalls.length) showToolCalls(reply.item, toolCalls.filter(Boolean));
    if (!content && !toolCalls.length) reply.content.textContent = failed ? "(no reply)" : "(empty reply)";
    if (content || toolCalls.length) {
      // What comes next in the conversation: the assistant's text (tool calls are shown, not replayed).
      conversation.push({ role: "assistant", content: content });
    }
    const ttft = firstAt === null ? null : firstAt - started;
    const generating = firstAt === null ? 0 : (ended - firstAt) / 1000;
    const tokensPerSecond =
      usage && generating > 0 && usage.completion_tokens > 1 ? (usage.completion_tokens - 1) / generating : null;
    if (usage || !failed) showStats(usage, ttft, tokensPerSecond);
    form.dataset.state = failed ? "error" : "done";
  }

  form.addEventListener("submit", send);
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  stopButton.addEventListener("click", function () {
    if (controller) controller.abort();
  });
  $("pg-clear").addEventListener("click", function () {
    conversation.length = 0;
    messagesList.replaceChildren();
    stats.hidden = true;
    errorBox.hidden = true;
    form.dataset.state = "idle";
  });

  // --- View code ---------------------------------------------------------------------------------

  // A JSON value as a Python literal (the JSON text of strings is a valid Python string literal).
  function python(value, indent) {
    const pad = "    ".repeat(indent + 1);
    const end = "    ".repeat(indent);
    if (value === null) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return "[\n" + value.map((item) => pad + python(item, indent + 1) + ",\n").join("") + end + "]";
    }
    if (typeof value === "object") {
      const keys = Object.keys(value);
      if (!keys.length) return "{}";
      return (
        "{\n" + keys.map((key) => pad + JSON.stringify(key) + ": " + python(value[key], indent + 1) + ",\n").join("") + end + "}"
      );
    }
    return JSON.stringify(value);
  }

  function curlCode(body) {
    const json = JSON.stringify(body, null, 2).replace(/'/g, "'\\''");
    return (
      "curl -N " + apiBase + "/chat/completions \\\n" +
      '  -H "Authorization: Bearer $GPUCLOUD_API_KEY" \\\n' +
      '  -H "Content-Type: application/json" \\\n' +
      "  -d '" + json + "'"
    );
  }

  function pythonCode(body) {
    const args = Object.keys(body)
      .map((key) => "    " + key + "=" + python(body[key], 1) + ",\n")
      .join("");
    return (
      "import os\n\nfrom openai import OpenAI\n\n" +
      'client = OpenAI(base_url="' + apiBase + '", api_key=os.environ["GPUCLOUD_API_KEY"])\n\n' +
      "stream = client.chat.completions.create(\n" + args + ")\n" +
      "for chunk in stream:\n" +
      "    if chunk.choices:\n" +
      '        print(chunk.choices[0].delta.content or "", end="", flush=True)\n' +
      "    elif chunk.usage:\n" +
      '        print(f"\\n[{chunk.usage.total_tokens} tokens]")\n'
    );
  }

  const dialog = $("pg-code");
  $("pg-view-code").addEventListener("click", function () {
    let body;
    try {
      body = buildRequest();
    } catch (error) {
      return;
    }
    $("pg-code-curl").textContent = curlCode(body);
    $("pg-code-python").textContent = pythonCode(body);
    dialog.showModal();
  });
  $("pg-code-close").addEventListener("click", function () {
    dialog.close();
  });
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });
})();
