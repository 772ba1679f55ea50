#!/bin/sh
# Lists the file → file import edges of src/ (`use crate::…`, `super::…`, call
# paths `crate::a::b`), then reports cycles between files and imports that run up
# a layer (LAYERS below). Exit status 1 when either exists. `tools/imports.sh --edges` also prints
# every edge. Inline `#[cfg(test)]` modules are left out.
exec python3 - "$@" <<'PY'
import os, re, sys

SRC = "src"
# Rooms from the ground floor up; a file may import its own room or lower ones.
LAYERS = [
    ["fsutil", "gocompat"],
    ["secret"],
    ["registry"],
    ["config"],
    ["store"],
    ["helper", "kubelet", "registry_login", "pull"],
    ["proxy"],
    ["admin"],
    ["cli"],
    ["lib", "main"],
]
RANK = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}

def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return tuple(rel) if rel != ["lib"] and rel != ["main"] else ()

files = {}
for root, _, names in os.walk(SRC):
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            if p in (os.path.join(SRC, "main.rs"),):
                continue
            files[module_of(p)] = p

def resolve(segments, follow=True, depth=0):
    """The file `segments` names: its longest module prefix, through `pub use`."""
    for i in range(len(segments), -1, -1):
        mod = tuple(segments[:i])
        if mod in files:
            rest = segments[i:]
            if follow and rest and depth < 8 and rest[0] in reexports.get(mod, {}):
                return resolve(reexports[mod][rest[0]] + rest[1:], True, depth + 1)
            return mod
    return None

def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    m = re.search(r"#\[cfg\(test\)\]\s*mod tests\b", text)
    return text[: m.start()] if m else text

def expand(tree):
    """`a::{b, c::{d, e}}` → [a::b, a::c::d, a::c::e]"""
    tree = tree.strip()
    i = tree.find("{")
    if i < 0:
        return [tree]
    prefix, body = tree[:i], tree[i + 1 : tree.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in body:
        if ch == "," and depth == 0:
            parts.append(cur); cur = ""; continue
        depth += ch == "{"; depth -= ch == "}"; cur += ch
    parts.append(cur)
    return [prefix + p for part in parts if part.strip() for p in expand(part)]

def absolute(mod, path):
    path = re.split(r"\s+as\s+", path.strip())[0]
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    base = list(mod)
    if segs[0] in ("super", "self"):
        # `super` inside foo/mod.rs or foo.rs is foo's parent
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
        return base + segs
    return None

texts = {mod: strip(open(path).read()) for mod, path in files.items()}
reexports = {}  # module -> {exported name: absolute path of the item}
for mod, text in texts.items():
    for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
        for p in expand(m.group(1)):
            segs = absolute(mod, p) if p.split("::")[0] in ("crate", "super", "self") else list(mod) + p.split("::")
            alias = re.search(r"\s+as\s+(\w+)", p)
            if segs:
                reexports.setdefault(mod, {})[alias.group(1) if alias else segs[-1]] = segs

edges = {}  # (from_mod, to_mod) -> kind ("use" | "reexport")
for mod, text in texts.items():
    found = []
    for m in re.finditer(r"\b(pub(?:\([^)]*\))?\s+)?use\s+([^;]+);", text):
        for p in expand(m.group(2)):
            found.append((p, "reexport" if m.group(1) else "use"))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    for m in re.finditer(r"\b(?:crate|super)(?:::\w+)+", body):
        found.append((m.group(0), "use"))
    for p, kind in found:
        segs = absolute(mod, p)
        if segs is None:
            continue
        target = resolve(segs)
        if target is None or target == mod:
            continue
        # A module using or re-exporting its own sub-modules is containment.
        if target[: len(mod)] == mod:
            continue
        edges.setdefault((mod, target), kind)

def name(mod):
    return files[mod]

graph = {}
for a, b in edges:
    graph.setdefault(a, set()).add(b)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in graph.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)
for v in sorted(files):
    if v not in index:
        visit(v)

def room(mod):
    return mod[0] if mod else "lib"

upward = []
for (a, b) in sorted(edges):
    ra, rb = RANK.get(room(a)), RANK.get(room(b))
    if ra is not None and rb is not None and rb > ra:
        upward.append((a, b))

if "--edges" in sys.argv:
    for (a, b), kind in sorted(edges.items()):
        print(f"{name(a)} -> {name(b)}" + (" (re-export)" if kind == "reexport" else ""))
print(f"files: {len(files)}  edges: {len(edges)}")
print(f"cycles: {len(sccs)}")
for comp in sccs:
    comp = sorted(comp)
    print("  " + " <-> ".join(name(m) for m in comp))
    for a in comp:
        for b in sorted(graph.get(a, ())):
            if b in comp:
                print(f"      {name(a)} -> {name(b)}")
print(f"upward imports: {len(upward)}")
for a, b in upward:
    print(f"  {name(a)} -> {name(b)}")
sys.exit(1 if sccs or upward else 0)
PY
