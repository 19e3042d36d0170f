#!/usr/bin/env python3
"""Regenerate openapi/definitions.json: the Kubernetes schema definitions the server
publishes under /openapi and reads its patch strategies, merge keys, list types and map
keys from.

Source: the JSON schemas for one Kubernetes release as packaged on PyPI by
`kubernetes-validate` (derived from the release's own OpenAPI document, keeping its
`x-kubernetes-*` extensions). Keep KUBE_VERSION equal to the k8s-openapi feature in
Cargo.toml and to the version /version reports.

The JSON-Schema dialect is turned back into OpenAPI form: `$ref`s point at
`#/definitions/`, nullable type lists become one type, the apiVersion/kind enums the
converter added are dropped, and IntOrString/Quantity regain their string formats.

Usage: scripts/gen-openapi-definitions.py [path/to/kubernetes_validate-X.whl]
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import zipfile

KUBE_VERSION = "1.33.0"
ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "openapi" / "definitions.json"

# Types whose wire form is a string (or number) that the JSON-Schema export spelled as oneOf.
STRING_FORMATS = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": "int-or-string",
    "io.k8s.apimachinery.pkg.api.resource.Quantity": "quantity",
}


def load_wheel(path):
    member = f"kubernetes_validate/kubernetes-json-schema/v{KUBE_VERSION}-local/_definitions.json"
    with zipfile.ZipFile(path) as wheel:
        return json.loads(wheel.read(member))["$defs"]


def download_wheel(into):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", into,
         f"kubernetes-validate=={KUBE_VERSION}"],
        check=True,
    )
    return next(pathlib.Path(into).glob("kubernetes_validate-*.whl"))


def to_openapi(node, prop_name=None):
    if isinstance(node, list):
        return [to_openapi(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$ref":
            out[key] = value.replace("#/$defs/", "#/definitions/")
        elif key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            out[key] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "enum" and prop_name in ("apiVersion", "kind"):
            continue
        elif key == "properties":
            out[key] = {name: to_openapi(v, name) for name, v in value.items()}
        else:
            out[key] = to_openapi(value)
    return out


def main():
    if len(sys.argv) > 1:
        defs = load_wheel(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            defs = load_wheel(download_wheel(tmp))
    result = {}
    for name in sorted(defs):
        schema = to_openapi(defs[name])
        if name in STRING_FORMATS:
            schema = {"type": "string", "format": STRING_FORMATS[name]}
        result[name] = schema
    OUT.parent.mkdir(exist_ok=True)
    # One definition per line keeps diffs between Kubernetes versions readable.
    lines = [f"{json.dumps(n)}:{json.dumps(s, sort_keys=True, separators=(',', ':'))}" for n, s in result.items()]
    OUT.write_text("{\n" + ",\n".join(lines) + "\n}\n")
    print(f"wrote {len(result)} definitions for Kubernetes {KUBE_VERSION} to {OUT}")


if __name__ == "__main__":
    main()
