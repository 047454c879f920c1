#!/usr/bin/env python3
"""The module graph of every crate target in the workspace, and a check that it has no cycle.

For each crate root (a `lib.rs` or `main.rs`), the top-level modules are the `mod NAME;` lines of that root; a
module's files are `NAME.rs` or everything under `NAME/` (nested `#[path]` files are read where they are declared).
An edge A -> B is any `crate::B` path in A's files (also inside `use crate::{...}` groups), or a `super::` path that
climbs to the crate root and names B (`super::B` in `A.rs` or `A/mod.rs`, `super::super::B` in `A/x.rs`, ...).
Comments are skipped.

    python3 scripts/module-graph.py            # print every crate's graph; exit 1 on a cycle
    python3 scripts/module-graph.py --quiet    # only the verdict

Used by .ci/run, so that a new import loop fails CI.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = [
    ("mqtt-llm (lib)", "src", "lib.rs"),
    ("mqtt-llm (bin)", "src", "main.rs"),
    ("mqtt-llm-protocol", "crates/protocol/src", "lib.rs"),
    ("mqtt-llm-client", "crates/client/src", "lib.rs"),
    ("vllm-sim (lib)", "crates/vllm-sim/src", "lib.rs"),
    ("vllm-sim (bin)", "crates/vllm-sim/src", "main.rs"),
]
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] if "//" in line else line for line in text.splitlines())


def module_files(src, name):
    single = os.path.join(src, name + ".rs")
    folder = os.path.join(src, name)
    files = [single] if os.path.isfile(single) else []
    if os.path.isdir(folder):
        for dirpath, _, names in os.walk(folder):
            files += [os.path.join(dirpath, n) for n in names if n.endswith(".rs")]
    return files


def root_prefix(src, path):
    """The path prefix that names the crate root from this file: `crate::`, or `super::` repeated its depth."""
    parts = os.path.relpath(path, src).split(os.sep)
    depth = len(parts) - (1 if parts[-1] == "mod.rs" else 0)
    return r"(?:\bcrate|(?<![:\w])" + r"::".join(["super"] * depth) + r"(?!::super))"


def crate_refs(text, prefix=r"\bcrate"):
    """Every top-level module named after the root prefix, in plain paths and in `{...}` groups."""
    refs = set(re.findall(prefix + r"::([a-z_][a-z0-9_]*)\b", text))
    for match in re.finditer(prefix + r"::\{", text):
        depth, i, token = 1, match.end(), ""
        expecting_name = True
        while i < len(text) and depth:
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            elif depth == 1 and c == ",":
                expecting_name = True
            elif depth == 1 and expecting_name and (c.isalnum() or c == "_"):
                token += c
            elif token:
                refs.add(token)
                token, expecting_name = "", False
            i += 1
    return refs


def graph(src, root_file):
    root_text = strip_comments(open(os.path.join(src, root_file)).read())
    mods = sorted(set(MOD_DECL.findall(root_text)))
    edges = {}
    for m in mods:
        refs = set()
        for f in module_files(src, m):
            refs |= crate_refs(strip_comments(open(f).read()), root_prefix(src, f))
        edges[m] = sorted(r for r in refs if r in mods and r != m)
    return edges


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def main():
    quiet = "--quiet" in sys.argv
    failed = False
    for name, src, root_file in TARGETS:
        src = os.path.join(ROOT, src)
        if not os.path.isfile(os.path.join(src, root_file)):
            continue
        edges = graph(src, root_file)
        loops = cycles(edges)
        if not quiet:
            print(f"{name}: {len(edges)} top-level modules")
            for m, targets in edges.items():
                print(f"  {m} -> {' '.join(targets) if targets else '(nothing of ours)'}")
        for loop in loops:
            failed = True
            print(f"{name}: import cycle between {', '.join(loop)}", file=sys.stderr)
    print("module graph: cycles found" if failed else "module graph: no cycle in any crate")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
