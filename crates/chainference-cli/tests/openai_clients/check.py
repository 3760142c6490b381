"""The official openai-python client against a Chainference gateway: answers, streaming, stop
sequences, usage, and the fields the gateway refuses by name. Usage: check.py BASE_URL MODEL."""

import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="not-needed", max_retries=0, timeout=120)
messages = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
]
ANSWER = "The capital of France is Paris."

assert any(m.id == model for m in client.models.list()), "the model is listed"

reply = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=64)
choice = reply.choices[0]
assert choice.message.content == ANSWER, reply
assert choice.finish_reason == "stop", reply
assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (27, 7, 34), reply

text, finish, usage = "", None, None
for chunk in client.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=64, stream=True, stream_options={"include_usage": True}
):
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage:
        usage = chunk.usage
assert text == ANSWER, text
assert finish == "stop" and usage.total_tokens == 34, (finish, usage)

stopped = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=64, stop="Paris")
assert stopped.choices[0].message.content == "The capital of France is ", stopped
assert stopped.usage.total_tokens == 33, stopped.usage

tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
for extra, param in [
    ({"n": 2}, "n"),
    ({"tools": [tool]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
]:
    try:
        client.chat.completions.create(model=model, messages=messages, **extra)
    except openai.BadRequestError as error:
        assert error.status_code == 400 and error.param == param, (extra, error.param, error.message)
    else:
        raise AssertionError(f"{extra} was accepted")

# The legacy text completions API is not served; the error says what to use.
try:
    client.completions.create(model=model, prompt="The capital of France is")
except openai.NotFoundError as error:
    assert error.code == "unsupported_endpoint" and "/v1/chat/completions" in error.message, error
else:
    raise AssertionError("/v1/completions answered")

print(f"openai-python {openai.__version__}: all checks passed against {base_url}")
