"""openai-python reads a chat-completions stream of a run in which OpenCode's own `bash` tool
runs, once with the agent's activity shown (request header `x-opencode-activity: 1`, which adds
`: opencode-activity {json}` SSE comments) and once without. Both must parse without error and
give the same text. Prints one JSON line for tests/it/agent_mode.rs to assert on. Needs GATEWAY_URL
and, if keyed, API_KEY."""

import json
import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ["GATEWAY_URL"] + "/v1",
    api_key=os.environ.get("API_KEY") or "unused",
    max_retries=0,
    timeout=60,
)
PROMPT = 'python sdk [call:bash:{"command":"echo sdk-activity","description":"say it"}]'


def read(activity):
    headers = {"x-opencode-activity": "1"} if activity else {}
    stream = client.chat.completions.create(
        model="mock/echo",
        stream=True,
        messages=[{"role": "user", "content": PROMPT}],
        extra_headers=headers,
    )
    content, chunks, finish = "", 0, None
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            choice = chunk.choices[0]
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return {"content": content, "chunks": chunks, "finish": finish}


print(json.dumps({"with": read(True), "without": read(False)}))
