"""Validates the admin API's OpenAPI document and every recorded response against it.

usage: openapi_check.py SPEC.json RESPONSES.jsonl
Each line of RESPONSES.jsonl: {"method", "path" (the document's path template), "status", "body"}.
Needs PyPI's openapi-spec-validator and jsonschema (tests/run.sh installs them).
"""
import json
import sys

from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def main():
    spec = json.load(open(sys.argv[1]))
    validate(spec)
    checked = 0
    for line in open(sys.argv[2]):
        r = json.loads(line)
        op = spec["paths"][r["path"]][r["method"].lower()]
        resp = op["responses"].get(str(r["status"]))
        if resp is None:
            sys.exit(f"{r['method']} {r['path']}: status {r['status']} is not documented")
        content = resp.get("content")
        if content is None:
            if r["body"] is not None:
                sys.exit(f"{r['method']} {r['path']} {r['status']}: documented without a body")
            continue
        schema = dict(content["application/json"]["schema"])
        schema["components"] = spec["components"]
        errors = sorted(Draft202012Validator(schema).iter_errors(r["body"]), key=str)
        if errors:
            sys.exit(f"{r['method']} {r['path']} {r['status']}: {errors[0].message}")
        checked += 1
    print(f"openapi: document valid; {checked} responses conform")


main()
