"""Use a zswarm node from the official OpenAI client: a streamed answer, then candidates.

    .venv/bin/zswarm node &        # its banner prints the HTTP address
    .venv/bin/python examples/openai_client.py --base-url http://127.0.0.1:17615/v1

1. lists the models the swarm serves;
2. streams an answer token by token (``stream=True``); the last chunk carries the
   ``zswarm`` report (which nodes answered);
3. gives the ask a budget of up to 16 candidates with the ``zswarm`` extension
   (``extra_body``): the node asks for them in waves over its workers and peers until
   the answer is settled, and picks one with the strategy; the response's ``zswarm``
   field says who said what, how many candidates it took and why it stopped.
"""

from __future__ import annotations

import argparse
import os
import sys

import openai


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL",
                                                             "http://127.0.0.1:17615/v1"))
    parser.add_argument("--api-key", default=os.environ.get("ZSWARM_API_KEY", "none"),
                        help="a key of [http] api_keys, if the node has any")
    parser.add_argument("question", nargs="?", default="What is the capital of France?")
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=1)
    messages = [{"role": "user", "content": args.question}]

    print("models:", ", ".join(m.id for m in client.models.list()))

    print("\nstreamed: ", end="", flush=True)
    report = None
    for chunk in client.chat.completions.create(model="default", messages=messages,
                                                stream=True, max_tokens=48, temperature=0):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
        report = (chunk.model_extra or {}).get("zswarm") or report
    print()
    if report:
        print(f"  answered by: {', '.join(report['nodes'])}")

    response = client.chat.completions.create(
        model="default", messages=messages, max_tokens=48, temperature=0.7,
        extra_body={"zswarm": {"budget": 16, "strategy": "confidence"}})
    report = (response.model_extra or {})["zswarm"]
    # waves of 4, 4 and 8 candidates, until the winner is settled (or cannot be)
    print(f"\n{report['strategy']}, {len(report['candidates'])} of a budget of "
          f"{report['budget']} candidates, {report['waves']} wave(s), stopped: "
          f"{report['stop']} (agreement {report['agreement']:.2f}): "
          f"{response.choices[0].message.content}")
    for i, cand in enumerate(report["candidates"]):
        mark = "*" if i == report["winner"] else " "
        text = " ".join(cand["text"].split())
        print(f" {mark} {cand['node']}/{cand['worker']}: {text[:70]}")


if __name__ == "__main__":
    try:
        main()
    except openai.APIError as exc:
        sys.exit(f"error: {exc}")
