"""llama.cpp's figures for `cargo xtask bench-backend`, measured the way the Candle bench
measures its own (same GGUF as shipped, same prompts, chat template from the file, greedy):
prompt tokens/s on a long prompt, time to first token on the France prompt, generation tokens/s
on a 128-token story; medians of 3 runs after a warm-up. Prints one JSON line.

usage: python bench_llama.py MODEL.gguf THREADS
"""

import json
import statistics
import sys
import time

from llama_cpp import Llama

GENERATED = 128
RUNS = 3


def system(user):
    return [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": user}]


FRANCE = system("What is the capital of France?")
STORY = system("Write a long story about a lighthouse keeper and a storm.")
PASSAGE = (
    "The lighthouse stood on a rock at the edge of the bay, and every night its keeper climbed "
    "the spiral stairs to light the lamp, wind the clockwork and polish the great lens. "
)
LONG = system("Summarize this passage in one sentence: " + PASSAGE * 6)


def timed(llm, messages, max_tokens):
    """(seconds to the first token, completion pieces, seconds from the first piece to the last)."""
    llm.reset()  # no prompt reuse between runs: every run evaluates its prompt
    started = time.perf_counter()
    first = last = None
    pieces = 0
    for chunk in llm.create_chat_completion(messages=messages, max_tokens=max_tokens, temperature=0.0, stream=True):
        if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            now = time.perf_counter() - started
            first = now if first is None else first
            last = now
            pieces += 1
    return first or 0.0, pieces, (last or 0.0) - (first or 0.0)


def prompt_tokens(llm, messages):
    llm.reset()
    return llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0.0)["usage"]["prompt_tokens"]


def main():
    model, threads = sys.argv[1], int(sys.argv[2])
    # flash_attn: the batched prompt path without it gives wrong greedy answers (see xtask's llama.rs).
    llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=2048, verbose=False, seed=0,
                flash_attn=True)
    timed(llm, FRANCE, 8)
    long_tokens = prompt_tokens(llm, LONG)
    prompt_tps, ttft, gen_tps = [], [], []
    for _ in range(RUNS):
        first, _, _ = timed(llm, LONG, 1)
        prompt_tps.append(long_tokens / first if first else 0.0)
        first, _, _ = timed(llm, FRANCE, 1)
        ttft.append(first * 1000.0)
        _, pieces, streaming = timed(llm, STORY, GENERATED)
        gen_tps.append((pieces - 1) / streaming if streaming else 0.0)
    print(
        json.dumps(
            {
                "mode": "llama.cpp",
                "threads": threads,
                "prompt_tokens": long_tokens,
                "prompt_tps": round(statistics.median(prompt_tps), 1),
                "ttft_ms": round(statistics.median(ttft), 1),
                "gen_tps": round(statistics.median(gen_tps), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
