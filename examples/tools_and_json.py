"""Tools and structured output from the official OpenAI client, voted across the swarm.

    .venv/bin/zswarm node &        # its banner prints the HTTP address
    .venv/bin/python examples/tools_and_json.py --base-url http://127.0.0.1:17615/v1

1. extraction: ``response_format`` with a JSON schema; five candidates (``zswarm.n``) are
   decoded under the schema, grouped by value (canonical JSON) and voted: the answer
   always parses and validates, and the report shows each candidate's value;
2. an agent loop: the model must call ``get_weather`` (``tool_choice: "required"``), this
   script runs the function, sends the result back as a ``tool`` message, and the model
   answers in words.
"""

from __future__ import annotations

import argparse
import json
import os

import openai

PERSON = {"type": "object", "properties": {"name": {"type": "string"},
                                           "age": {"type": "integer"},
                                           "city": {"type": "string"}},
          "required": ["name", "age", "city"], "additionalProperties": False}
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}


def get_weather(city: str) -> dict[str, object]:
    """A stand-in for a real weather service."""
    return {"city": city, "sky": "sunny", "celsius": 21}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL",
                                                             "http://127.0.0.1:17615/v1"))
    parser.add_argument("--api-key", default=os.environ.get("ZSWARM_API_KEY", "none"))
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=1)

    text = "Carmen is 41 and has lived in Lima since she left Madrid."
    r = client.chat.completions.create(
        model="default", temperature=0.8, max_tokens=60,
        messages=[{"role": "user", "content": f"{text}\nExtract the person's name, age and "
                   "city."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": PERSON, "strict": True}},
        extra_body={"zswarm": {"n": 5, "strategy": "confidence"}})
    person = json.loads(r.choices[0].message.content)
    print("extracted:", json.dumps(person, sort_keys=True))
    report = r.model_extra["zswarm"]
    for i, c in enumerate(report["candidates"]):
        mark = "*" if i == report["winner"] else " "
        print(f" {mark} {c['node']}/{c['worker']}: {c['answer_key']}")

    messages: list[dict[str, object]] = [
        {"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model="default", messages=messages, temperature=0,
                                       max_tokens=60, tools=[WEATHER_TOOL],
                                       tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    print(f"call: {call.function.name}({call.function.arguments})  "
          f"finish_reason={r.choices[0].finish_reason}")
    result = get_weather(**json.loads(call.function.arguments))
    messages += [r.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}]
    r = client.chat.completions.create(model="default", messages=messages, temperature=0,
                                       max_tokens=48, tools=[WEATHER_TOOL])
    print("answer:", r.choices[0].message.content)


if __name__ == "__main__":
    main()
