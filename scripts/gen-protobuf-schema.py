#!/usr/bin/env python3
"""Generate src/protobuf/schema.json: the Kubernetes protobuf message table.

The decoder in src/protobuf/ turns a Kubernetes protobuf body
(`k8s\\0` + runtime.Unknown) into Kubernetes JSON. It needs, for every
message: each field's tag, JSON name, protobuf type, cardinality and nested
message, plus a few Go-side facts. They come from:

  * k8s-pb 0.9.0 (prost-generated structs): message names, tags, types,
    cardinality (optional / repeated / map), nested message paths, and the
    Resource impls (apiVersion + kind -> message).
  * k8s-openapi 0.29.0 (v1_33 first, then newer modules for messages or
    fields v1_33 lacks): the JSON name of every field, read from the
    hand-expanded serde code (`"volumeID" => Field::Key_volume_id`), and the
    Go-cased definition name (`// Generated from definition io.k8s...`).
    Fields the openapi struct lacks but whose message's fields it has are
    Go `json:",inline"` fields (Volume.volumeSource, Probe.handler...).
  * Optionally, Go sources of k8s.io/api, apimachinery, apiextensions-apiserver,
    kube-aggregator and metrics (`--go-src DIR`, each a checkout): the Go
    field's pointer-ness and omitempty/omitzero, and JSON names / embedded
    structs for what the crates cannot name (API versions k8s-openapi no
    longer has, List types). Kubernetes' protobuf marshaller writes every
    non-pointer field, zero or not (an empty generateName, generation 0 ...),
    while its JSON leaves zero omitempty fields out and keeps explicit zeros
    of pointers (replicas: 0, gracePeriodSeconds: 0); these flags let the
    decoder print what Go's JSON prints. Where both sources name a field the
    script reports any disagreement (go_mismatch; none at the last run).
    Without --go-src the Go-derived facts already in the existing schema.json
    are carried over, so regenerating without Go sources is a no-op.

JSON names are taken, in order, from: the openapi struct by Rust field name;
newer openapi modules; a punctuation-insensitive match (prost's pod_i_ps,
openapi's pod_ips, "podIPs"); the openapi struct of the parent that embeds the
message; Go (or the carried-over Go result); the same message in another
version of the group; lowerCamelCase of the prost name. Counts per source and
the list of camelCase fallbacks are printed on stderr.

Usage: scripts/gen-protobuf-schema.py [--go-src DIR ...] [--out src/protobuf/schema.json]
"""

import argparse
import glob
import json
import os
import re
import sys

REGISTRY = os.path.expanduser("~/.cargo/registry/src")
OPENAPI_VERSIONS = ["v1_33", "v1_34", "v1_35", "v1_36", "v1_37"]

# Field flag bits (mirrored in src/protobuf/schema.rs).
F_KEEP_ZERO = 1  # Go pointer or no omitempty: a present zero value is shown
F_INLINE = 2  # Go `json:",inline"`: the message's fields go into the parent
F_OMIT_ZERO_MSG = 4  # Go omitzero on a struct: an all-zero message is left out
F_GO_KNOWN = 8  # the Go field was found (flags above are facts, not defaults)

# Messages whose JSON form is not an object (Go MarshalJSON or named slices).
SPECIAL = {
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "quantity",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": "quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "intorstring",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "microtime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "rawjson",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "rawjson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSON": "rawjson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSON": "rawjson",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray": "schemaorarray",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrArray": "schemaorarray",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool": "schemaorbool",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrBool": "schemaorbool",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray": "schemaorstringarray",
    "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1beta1.JSONSchemaPropsOrStringArray": "schemaorstringarray",
}

# Groups of packages none of whose versions has a Resource impl in k8s-pb.
EXTRA_GROUPS = {
    "api/admission": "admission.k8s.io",
    "api/apidiscovery": "apidiscovery.k8s.io",
    "api/imagepolicy": "imagepolicy.k8s.io",
    "api/extensions": "extensions",
    "metrics/pkg/apis/metrics": "metrics.k8s.io",
    "metrics/pkg/apis/custom_metrics": "custom.metrics.k8s.io",
    "metrics/pkg/apis/external_metrics": "external.metrics.k8s.io",
}

SCALARS = {"string", "int32", "int64", "bool", "double", "bytes", "float", "uint32", "uint64"}


def crate_dir(name):
    hits = sorted(glob.glob(os.path.join(REGISTRY, "*", name)))
    if not hits:
        sys.exit(f"{name} is not in {REGISTRY}; run `cargo fetch` (k8s-pb is a dev-dependency)")
    return hits[0]


def squash(s):
    return re.sub(r"[^a-z0-9]", "", s.lower())


def norm_rust(name):
    if name.startswith("r#"):
        name = name[2:]
    return name.rstrip("_")


def lower_camel(snake):
    parts = norm_rust(snake).split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


# ---------------------------------------------------------------- k8s-pb ---

def parse_k8s_pb(root):
    """Returns ({pb_fqn: {"name", "pkg", "fields": [...]}}, {apiVersion: module dir})."""
    messages = {}
    resources = []  # (api_version, kind, fqn)
    src = os.path.join(root, "src")
    for path in sorted(glob.glob(os.path.join(src, "**", "mod.rs"), recursive=True)):
        mod = os.path.relpath(os.path.dirname(path), src).split(os.sep)
        if mod == ["."]:
            continue
        pkg = "k8s.io." + ".".join(mod)
        text = open(path).read()
        lines = text.split("\n")
        i = 0
        cur = None
        while i < len(lines):
            line = lines[i]
            m = re.match(r"^pub struct (\w+) \{", line)
            if m:
                cur = {"rust": m.group(1), "pkg": pkg, "mod": mod, "fields": []}
                messages[pkg + "." + m.group(1)] = cur
                i += 1
                continue
            if line == "}":
                cur = None
            m = re.match(r"^\s*#\[prost\((.*)\)\]\s*$", line)
            if m and cur is not None:
                attr = m.group(1)
                decl = ""
                i += 1
                while True:
                    decl += " " + lines[i].strip()
                    if decl.rstrip().endswith(",") and decl.count("<") == decl.count(">"):
                        break
                    i += 1
                dm = re.match(r"\s*pub ([\w#]+):\s*(.*),\s*$", decl)
                if not dm:
                    sys.exit(f"cannot parse field in {path}: {decl}")
                cur["fields"].append(parse_field(attr, dm.group(1), dm.group(2), mod, path))
            i += 1
        for m in re.finditer(
            r'impl crate::Resource for (\w+) \{\s*const API_VERSION: &\'static str = "([^"]*)";'
            r'.*?const KIND: &\'static str = "([^"]*)";',
            text,
            re.S,
        ):
            resources.append((m.group(2), m.group(3), pkg + "." + m.group(1)))
    return messages, resources


def parse_field(attr, name, rust_type, mod, path):
    tag = int(re.search(r'tag = "(\d+)"', attr).group(1))
    f = {"rust": name, "tag": tag}
    mm = re.match(r'(?:btree_map|map) = "(\w+), (\w+)"', attr)
    if mm:
        f["card"] = "m"
        if mm.group(1) != "string":
            sys.exit(f"non-string map key in {path}: {attr}")
        f["type"] = mm.group(2)
    else:
        kind = attr.split(",")[0].strip()
        kind = kind.split("=")[0].strip()  # bytes = "vec"
        f["type"] = kind
        if ", repeated" in attr:
            f["card"] = "r"
        elif ", optional" in attr or ", required" in attr:
            f["card"] = "o"
        else:
            sys.exit(f"unknown cardinality in {path}: {attr}")
    if f["type"] == "message":
        f["ref"] = resolve_type(rust_type, mod, path)
    elif f["type"] not in SCALARS:
        sys.exit(f"unsupported prost type {f['type']} in {path}")
    return f


STD = {"Option", "Vec", "Box", "String", "BTreeMap", "HashMap"}


def resolve_type(rust_type, mod, path):
    cands = [
        m
        for m in re.finditer(r"((?:(?:super|crate|[a-z_][a-z0-9_]*)::)*)([A-Z]\w*)", rust_type)
        if m.group(2) not in STD
    ]
    if not cands:
        sys.exit(f"no message type in {path}: {rust_type}")
    m = cands[-1]
    prefix = [p for p in m.group(1).split("::") if p]
    base = list(mod)
    out = []
    for p in prefix:
        if p == "super":
            base = base[:-1]
        elif p == "crate":
            base = []
        else:
            out.append(p)
    return "k8s.io." + ".".join(base + out + [m.group(2)])


# ----------------------------------------------------------- k8s-openapi ---

def parse_openapi(root):
    """{version: {openapi_fqn_lower: {"name": GoName, "fields": {rust_name: json}}}}"""
    out = {}
    for ver in OPENAPI_VERSIONS:
        base = os.path.join(root, "src", ver)
        if not os.path.isdir(base):
            continue
        table = {}
        for path in glob.glob(os.path.join(base, "**", "*.rs"), recursive=True):
            text = open(path).read()
            dm = re.search(r"^// Generated from definition io\.(k8s\.[\w.-]+)\.(\w+)$", text, re.M)
            if not dm:
                continue
            pkg = "k8s.io." + dm.group(1)[len("k8s.") :].replace("-", "_")
            fields = {}
            for fm in re.finditer(r'^\s*"([^"]+)" => Field::Key_(\w+),$', text, re.M):
                fields[fm.group(2).rstrip("_")] = fm.group(1)
            table[(pkg + "." + dm.group(2)).lower()] = {"name": dm.group(2), "fields": fields}
        out[ver] = table
    return out


# ------------------------------------------------------------ Go sources ---

GO_PKG_ROOTS = [
    # (checkout marker dir, go dir prefix, proto package prefix)
    ("api", "", "k8s.io.api"),
    ("apimachinery", "pkg", "k8s.io.apimachinery.pkg"),
    ("apiextensions-apiserver", "pkg", "k8s.io.apiextensions_apiserver.pkg"),
    ("kube-aggregator", "pkg", "k8s.io.kube_aggregator.pkg"),
    ("metrics", "pkg", "k8s.io.metrics.pkg"),
]


def go_checkout_kind(d):
    gomod = os.path.join(d, "go.mod")
    if not os.path.exists(gomod):
        return None
    m = re.search(r"^module\s+(\S+)", open(gomod).read(), re.M)
    mod = m.group(1) if m else ""
    for name, _, _ in GO_PKG_ROOTS:
        if mod == "k8s.io/" + name:
            return name
    return None


def parse_go(dirs):
    """{(proto_pkg_lower, struct_lower, tag): {"ptr", "omitempty", "omitzero", "json", "inline"}}"""
    out = {}
    for d in dirs:
        kind = go_checkout_kind(d)
        if kind is None:
            sys.exit(f"--go-src {d}: not a checkout of one of " + ", ".join("k8s.io/" + r[0] for r in GO_PKG_ROOTS))
        _, sub, proto_prefix = next(r for r in GO_PKG_ROOTS if r[0] == kind)
        base = os.path.join(d, sub) if sub else d
        for path in glob.glob(os.path.join(base, "**", "*.go"), recursive=True):
            if path.endswith("_test.go") or "/testing/" in path or "/internal/" in path:
                continue
            rel = os.path.relpath(os.path.dirname(path), base).replace(os.sep, ".").replace("-", "_")
            pkg = (proto_prefix + "." + rel).lower()
            parse_go_file(path, pkg, out)
    return out


def parse_go_file(path, pkg, out):
    struct = None
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^type (\w+) struct \{", line)
        if m:
            struct = m.group(1).lower()
            out.setdefault(("names", pkg), {})[struct] = m.group(1)
            continue
        if line.startswith("}"):
            struct = None
            continue
        if struct is None or "`" not in line:
            continue
        tm = re.search(r'protobuf:"([^"]*)"', line)
        if not tm:
            continue
        parts = tm.group(1).split(",")
        try:
            tag = int(parts[1])
        except (IndexError, ValueError):
            continue
        decl = line.split("`")[0].split("//")[0].split()
        if not decl:
            continue
        gotype = decl[0] if len(decl) == 1 else " ".join(decl[1:])
        jm = re.search(r'json:"([^"]*)"', line)
        jparts = jm.group(1).split(",") if jm else [""]
        out[(pkg, struct, tag)] = {
            "ptr": gotype.startswith("*"),
            "omitempty": "omitempty" in jparts[1:],
            "omitzero": "omitzero" in jparts[1:],
            "json": jparts[0],
            # an embedded struct with no JSON name is promoted by encoding/json
            "inline": len(decl) == 1 and jparts[0] == "",
        }


# ------------------------------------------------------------------ main ---

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--go-src", action="append", default=[], help="a Go checkout (k8s.io/api, apimachinery, ...)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "src", "protobuf", "schema.json"))
    args = ap.parse_args()

    pb, resources = parse_k8s_pb(crate_dir("k8s-pb-0.9.0"))
    openapi = parse_openapi(crate_dir("k8s-openapi-0.29.0"))
    go = parse_go(args.go_src) if args.go_src else None
    old_flags = {}
    old_rows = {}
    old_names = {}
    if go is None and os.path.exists(args.out):
        old = json.load(open(args.out))
        old_names = {k.lower(): k for k in old["messages"]}
        for mname, msg in old["messages"].items():
            for f in msg.get("f", []):
                old_flags[(mname, f[0])] = f[5] & (F_KEEP_ZERO | F_OMIT_ZERO_MSG | F_GO_KNOWN)
                if f[5] & F_GO_KNOWN:
                    old_rows[(mname, f[0])] = (f[1], f[5] & F_INLINE)

    # Proto (Go-cased) message names: the Resource kind, else the openapi
    # definition name, else the prost name.
    proper = {}
    for pb_fqn, msg in pb.items():
        key = pb_fqn.lower()
        name = msg["rust"]
        if go is not None:
            name = go.get(("names", msg["pkg"].lower()), {}).get(name.lower(), name)
        elif key in old_names:
            name = old_names[key].rsplit(".", 1)[1]
        for ver in OPENAPI_VERSIONS:
            if key in openapi.get(ver, {}):
                name = openapi[ver][key]["name"]
                break
        proper[pb_fqn] = msg["pkg"] + "." + name
    for _, kind, pb_fqn in resources:
        proper[pb_fqn] = pb[pb_fqn]["pkg"] + "." + kind
    for pb_fqn in pb:
        for special in SPECIAL:
            if special.lower() == proper[pb_fqn].lower():
                proper[pb_fqn] = special
    by_lower = {k.lower(): k for k in pb}

    stats = {
        "messages": 0,
        "fields": 0,
        "openapi_v1_33": 0,
        "openapi_newer": 0,
        "openapi_inline_parent": 0,
        "squashed": 0,
        "go_json": 0,
        "camel_fallback": 0,
        "inline": 0,
        "go_known": 0,
        "no_openapi_struct": 0,
        "sibling_version": 0,
        "named_by_inline_parent": 0,
        "go_json_carried_over": 0,
        "special_internal": 0,
    }
    report = {"camel": [], "inline": [], "go_mismatch": [], "array_wrappers": [], "no_struct": []}

    def openapi_struct(pb_fqn):
        key = pb_fqn.lower()
        for ver in OPENAPI_VERSIONS:
            if key in openapi.get(ver, {}):
                return ver, openapi[ver][key]
        return None, None

    def siblings(pb_fqn):
        pkg, name = pb_fqn.rsplit(".", 1)
        group = pkg.rsplit(".", 1)[0]
        for ver in OPENAPI_VERSIONS:
            for key, st in sorted(openapi.get(ver, {}).items()):
                kp, kn = key.rsplit(".", 1)
                if kn == name.lower() and kp.rsplit(".", 1)[0] == group.lower():
                    yield st

    # Messages Go embeds (VolumeSource in Volume, ProbeHandler in Probe ...)
    # have no openapi struct of their own: their JSON names are in the parent's.
    def inline_child(oa, f):
        if not oa or f["type"] != "message" or f["card"] != "o" or norm_rust(f["rust"]) in oa["fields"]:
            return False
        sub = pb[by_lower[f["ref"].lower()]]
        subnames = {norm_rust(sf["rust"]) for sf in sub["fields"]}
        return bool(subnames) and len(subnames & set(oa["fields"])) * 2 >= len(subnames)

    inline_parent = {}
    for pb_fqn, msg in pb.items():
        _, oa = openapi_struct(pb_fqn)
        for f in msg["fields"]:
            if inline_child(oa, f):
                child = by_lower[f["ref"].lower()]
                merged = inline_parent.setdefault(child, {"name": "", "fields": {}})
                merged["fields"].update(oa["fields"])
    changed = True
    while changed:  # Rule inside RuleWithOperations inside NamedRuleWithOperations
        changed = False
        for pb_fqn, msg in pb.items():
            oa = openapi_struct(pb_fqn)[1] or inline_parent.get(pb_fqn)
            for f in msg["fields"]:
                child = by_lower.get((f.get("ref") or "").lower())
                if child and child not in inline_parent and openapi_struct(child)[1] is None and inline_child(oa, f):
                    inline_parent[child] = {"name": "", "fields": dict(oa["fields"])}
                    changed = True

    messages = {}
    for pb_fqn, msg in sorted(pb.items()):
        fqn = proper[pb_fqn]
        ver, oa = openapi_struct(pb_fqn)
        if oa is None and pb_fqn in inline_parent:
            ver, oa = "inline-parent", inline_parent[pb_fqn]
            stats["named_by_inline_parent"] += 1
        entry = {}
        special = SPECIAL.get(fqn)
        if special:
            entry["s"] = special
        elif (
            oa is None
            and len(msg["fields"]) == 1
            and msg["fields"][0]["card"] == "r"
            and msg["fields"][0]["rust"] == "items"
            and not fqn.endswith("List")
        ):
            # Go named slice (ExtraValue, Verbs): JSON is the bare array.
            entry["s"] = "array"
            report["array_wrappers"].append(fqn)
        if oa is None and not special:
            stats["no_openapi_struct"] += 1
            report["no_struct"].append(fqn)
        oa_json_squashed = {}
        if oa:
            for rust, js in oa["fields"].items():
                oa_json_squashed[squash(rust)] = js
                oa_json_squashed.setdefault(squash(js), js)
        fields = []
        for f in msg["fields"]:
            stats["fields"] += 1
            rust = norm_rust(f["rust"])
            json_name = None
            flags = 0
            ref = proper[by_lower[f["ref"].lower()]] if f.get("ref") else None
            if f.get("ref") and f["ref"].lower() not in by_lower:
                sys.exit(f"unresolved message {f['ref']} in {fqn}")
            # 1: the openapi struct of the message's own version, by Rust name
            if oa and rust in oa["fields"]:
                json_name = oa["fields"][rust]
                stats[{"v1_33": "openapi_v1_33", "inline-parent": "openapi_inline_parent"}.get(ver, "openapi_newer")] += 1
            # 2: newer openapi modules (a field added after 1.33)
            if json_name is None:
                for v2 in OPENAPI_VERSIONS:
                    o2 = openapi.get(v2, {}).get(pb_fqn.lower())
                    if o2 and rust in o2["fields"]:
                        json_name = o2["fields"][rust]
                        stats["openapi_newer"] += 1
                        break
            # 3: squashed comparison (prost's pod_i_ps vs openapi's pod_ips)
            if json_name is None and squash(rust) in oa_json_squashed:
                json_name = oa_json_squashed[squash(rust)]
                stats["squashed"] += 1
            # inline: a message field whose own fields the parent's JSON has
            if json_name is None and inline_child(oa, f):
                flags |= F_INLINE
                json_name = ""
                stats["inline"] += 1
                report["inline"].append(f"{fqn}.{f['rust']}")
            gofield = None
            if go is not None:
                gofield = go.get((msg["pkg"].lower(), fqn.rsplit(".", 1)[1].lower(), f["tag"]))
            if json_name is None and gofield and gofield["inline"] and f["type"] == "message":
                flags |= F_INLINE
                json_name = ""
                stats["inline"] += 1
                report["inline"].append(f"{fqn}.{f['rust']} (Go)")
            if json_name is None and gofield and gofield["json"] and not gofield["inline"]:
                json_name = gofield["json"]
                stats["go_json"] += 1
            # without --go-src: what the last Go-assisted run found
            if json_name is None and (fqn, f["tag"]) in old_rows:
                json_name, inline = old_rows[(fqn, f["tag"])]
                flags |= inline
                stats["go_json_carried_over"] += 1
            # 5: the same message in another version of the group (v2beta2 -> v2)
            if json_name is None and not special:
                for sib in siblings(pb_fqn):
                    sq = {squash(k): v for k, v in sib["fields"].items()}
                    sq.update({squash(v): v for v in sib["fields"].values()})
                    if rust in sib["fields"] or squash(rust) in sq:
                        json_name = sib["fields"].get(rust) or sq[squash(rust)]
                        stats["sibling_version"] += 1
                        break
            if json_name is None:
                json_name = lower_camel(f["rust"])
                if special:
                    stats["special_internal"] += 1
                    row = [f["tag"], json_name, f["card"], f["type"], ref or 0, flags]
                    fields.append(row)
                    continue
                stats["camel_fallback"] += 1
                report["camel"].append(f"{fqn}.{f['rust']} -> {json_name}")
            if gofield is not None:
                stats["go_known"] += 1
                flags |= F_GO_KNOWN
                if gofield["ptr"] or not (gofield["omitempty"] or gofield["omitzero"]):
                    flags |= F_KEEP_ZERO
                if gofield["omitzero"] and not gofield["ptr"]:
                    flags |= F_OMIT_ZERO_MSG
                go_inline = gofield["inline"]
                if special or fqn == "k8s.io.apimachinery.pkg.runtime.Unknown":
                    pass
                elif go_inline != bool(flags & F_INLINE) or (not go_inline and gofield["json"] != json_name):
                    report["go_mismatch"].append(
                        f"{fqn}.{f['rust']}: schema {json_name!r}{' inline' if flags & F_INLINE else ''}"
                        f" / Go {gofield['json']!r}{' inline' if go_inline else ''}"
                    )
            elif go is None:
                flags |= old_flags.get((fqn, f["tag"]), 0)
                if flags & F_GO_KNOWN:
                    stats["go_known"] += 1
            row = [f["tag"], json_name, f["card"], f["type"], ref or 0, flags]
            fields.append(row)
        if fields:
            entry["f"] = sorted(fields)
        messages[fqn] = entry
        stats["messages"] += 1

    # apiVersion -> package
    groups = {}
    mod_group = {}
    for api_version, _, pb_fqn in resources:
        pkg = pb[pb_fqn]["pkg"]
        groups[api_version] = pkg
        mod = pb[pb_fqn]["mod"]
        mod_group["/".join(mod[:-1])] = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
    mod_group.update(EXTRA_GROUPS)
    for msg in pb.values():
        parent = "/".join(msg["mod"][:-1])
        if parent in mod_group:
            g = mod_group[parent]
            v = msg["mod"][-1]
            groups.setdefault(f"{g}/{v}" if g else v, msg["pkg"])
    groups["meta.k8s.io/v1"] = "k8s.io.apimachinery.pkg.apis.meta.v1"
    groups["meta.k8s.io/v1beta1"] = "k8s.io.apimachinery.pkg.apis.meta.v1beta1"

    schema = {"groups": dict(sorted(groups.items())), "messages": messages}
    text = json.dumps(schema, separators=(",", ":"), sort_keys=False)
    with open(args.out, "w") as fh:
        fh.write(text + "\n")
    print(f"wrote {args.out}: {len(text) + 1} bytes", file=sys.stderr)
    for k, v in stats.items():
        print(f"  {k}: {v}", file=sys.stderr)
    for k in ("array_wrappers", "inline", "camel", "go_mismatch", "no_struct"):
        print(f"  {k} ({len(report[k])}):", file=sys.stderr)
        for line in report[k]:
            print(f"    {line}", file=sys.stderr)


if __name__ == "__main__":
    main()
