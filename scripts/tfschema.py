"""Checks the Terraform code in terraform/ against the providers' argument schemas.

    python3 scripts/tfschema.py check [DIR...]      (default: every directory of terraform/)
    python3 scripts/tfschema.py trim [--vendor DIR] [--out DIR]

Providers cannot be downloaded on the project's machines, so `terraform validate`
cannot run; their schemas can be had offline instead (see terraform/schemas/README.md).
`check` reads every .tf file (scripts/hcl.py) and reports, as `file:line: message`:

- a resource or data source type the provider does not have (with the closest name);
- an argument or nested block the type does not have (with the closest name), an
  attribute written as a block or a block written as an attribute, including inside
  `dynamic` blocks;
- a required argument or block that is missing;
- an argument the schema marks deprecated, and a literal string outside its allowed
  values;
- per configuration, the provider version constraint: every provider a resource
  comes from must be in `required_providers`; every vendored schema the constraint
  allows is checked (and at least one must be allowed); a provider with schemas of
  several versions must not allow one older than the oldest (nothing shows the code
  works there); arguments younger than the floor are refused; and a caller's floor
  must not be older than that of a local module it calls.

terraform/schemas/changelog.json adds by hand, from the providers' changelogs, what
the schemas cannot show: arguments younger than a floor, deprecations the AWS
extract lacks, and blocks deprecated when empty (`filter {}`).

Exit 0 when nothing is wrong, 1 with the problems on stdout, 2 on a usage error.

`trim` rewrites terraform/schemas/ from the vendored full schemas (default
`shared/vendor/terraform-schemas` beside the checkout, or $FLEET_TF_SCHEMAS):
only the resource and data source types terraform/ uses, so the check runs without
the vendor data.
"""

from __future__ import annotations

import difflib
import gzip
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hcl  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# $FLEET_TF_SCHEMA_DIR checks against other schemas (the tests use the full vendored
# ones to show deprecations are caught).
SCHEMAS = Path(os.environ.get("FLEET_TF_SCHEMA_DIR") or REPO / "terraform" / "schemas")
# Provider local name -> (resource type prefix, schema file name pattern).
PROVIDERS = {"aws": "aws_", "minio": "minio_"}
META_ARGS = {"count", "for_each", "depends_on", "provider"}
META_BLOCKS = {"lifecycle", "provisioner", "connection"}


# ---- versions ------------------------------------------------------------------------

def version(text: str) -> tuple[int, ...]:
    parts = [int(p) for p in re.findall(r"\d+", text)[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


def allows(constraint: str, v: tuple[int, ...]) -> bool:
    """Whether Terraform's version constraint (">= 3.20, < 4.0") allows version v."""
    for part in constraint.split(","):
        m = re.fullmatch(r"\s*(>=|<=|!=|~>|>|<|=)?\s*v?([0-9][0-9.]*)\s*", part)
        if not m:
            raise ValueError(f"cannot read version constraint {constraint!r}")
        op, want = m.group(1) or "=", m.group(2)
        w = version(want)
        ok = {
            ">=": v >= w, "<=": v <= w, ">": v > w, "<": v < w, "=": v == w, "!=": v != w,
        }.get(op)
        if op == "~>":
            n = len(want.split("."))
            upper = list(w[: max(n - 1, 1)])
            upper[-1] += 1
            ok = w <= v < tuple(upper + [0] * (3 - len(upper)))
        if not ok:
            return False
    return True


def floor(constraint: str) -> tuple[int, ...] | None:
    m = re.search(r"(>=|~>|>)\s*v?([0-9][0-9.]*)", constraint)
    return version(m.group(2)) if m else None


def show(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


# ---- schemas -------------------------------------------------------------------------

def load_schemas(directory: Path) -> dict[str, list[tuple[tuple[int, ...], dict]]]:
    """provider -> [(version, schema)], oldest first, from NAME-VERSION.json[.gz]."""
    out: dict[str, list] = {}
    for f in sorted(directory.iterdir()):
        m = re.fullmatch(r"([a-z0-9]+)-v?([0-9.]+?)\.json(\.gz)?", f.name)
        if not m:
            continue
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            out.setdefault(m.group(1), []).append((version(m.group(2)), json.load(fh)))
    for versions in out.values():
        versions.sort(key=lambda x: x[0])
    return out


def provider_of(rtype: str) -> str | None:
    return next((p for p, prefix in PROVIDERS.items() if rtype.startswith(prefix)), None)


# ---- configurations ------------------------------------------------------------------

def tf_dirs(root: Path) -> list[Path]:
    dirs = {f.parent for f in root.rglob("*.tf") if ".terraform" not in f.parts}
    return sorted(dirs)


def read_dir(d: Path) -> list[tuple[str, list]]:
    files = []
    for f in sorted(d.glob("*.tf")):
        files.append((str(f.relative_to(REPO) if f.is_relative_to(REPO) else f),
                      hcl.parse(f.read_text(), str(f))))
    return files


def required_providers(files) -> dict[str, tuple[str, int, str]]:
    """local name -> (file, line, version constraint)."""
    out = {}
    for name, body in files:
        for b in body:
            if not (isinstance(b, hcl.Block) and b.type == "terraform"):
                continue
            for rp in b.blocks():
                if rp.type != "required_providers":
                    continue
                for a in rp.attributes():
                    m = re.search(r'version\s*=\s*"([^"]*)"', a.raw)
                    out[a.name] = (name, a.line, m.group(1) if m else "")
    return out


def close(name: str, names) -> str:
    m = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f" (did you mean `{m[0]}`?)" if m else ""


# ---- the check -----------------------------------------------------------------------

class Checker:
    def __init__(self, schemas, changelog):
        self.schemas = schemas
        self.since = changelog.get("since", {})
        self.deprecated = changelog.get("deprecated", {})
        self.deprecated_empty = changelog.get("deprecated_empty", {})
        self.problems: list[str] = []
        self.notes: list[str] = []
        self.checked = 0

    def say(self, file: str, line: int, msg: str):
        self.problems.append(f"{file}:{line}: {msg}")

    def body(self, file, where, items, args, label, line):
        """Checks one block body `items` (of the block at `line`) against the schema
        `args` of `where`."""
        # The MinIO extract could not resolve some schemas built by Go functions:
        # check the names it has and nothing else.
        partial = "__unresolved__" in args
        if partial:
            self.notes.append(f"{file}:{line}: {where}: the schema is partial (unresolved in the provider source); only known names are checked")
        seen = set()
        for item in items:
            if isinstance(item, hcl.Attribute):
                if item.name in META_ARGS and label == "top":
                    continue
                spec = args.get(item.name)
                if spec is None and partial:
                    continue
                if spec is None:
                    self.say(file, item.line, f"{where}: unknown argument `{item.name}`{close(item.name, args)}")
                    continue
                seen.add(item.name)
                if spec.get("block"):
                    self.say(file, item.line, f"{where}: `{item.name}` is a block: write `{item.name} {{ ... }}`, not `{item.name} = ...`")
                    continue
                self.common(file, item.line, where, item.name, spec)
                if item.literal is not None and spec.get("enum") and item.literal not in spec["enum"]:
                    self.say(file, item.line, f"{where}: `{item.name}` = {item.literal!r} is not one of {spec['enum']}")
            else:
                if item.type in META_BLOCKS and label == "top":
                    continue
                name, inner = item.type, item.body
                if item.type == "dynamic":
                    name = item.labels[0] if item.labels else ""
                    content = [b for b in item.blocks() if b.type == "content"]
                    inner = content[0].body if content else []
                spec = args.get(name)
                if spec is None and partial:
                    continue
                if spec is None:
                    self.say(file, item.line, f"{where}: unknown block `{name}`{close(name, args)}")
                    continue
                seen.add(name)
                if not spec.get("block"):
                    self.say(file, item.line, f"{where}: `{name}` is an argument: write `{name} = ...`, not a block")
                    continue
                self.common(file, item.line, where, name, spec)
                self.body(file, f"{where}.{name}", inner, spec.get("args", {}), "nested", item.line)
                if item.type == "dynamic":
                    seen.add(name)
        for name, spec in sorted(args.items()):
            if isinstance(spec, dict) and spec.get("required") and name not in seen:
                kind = "block" if spec.get("block") else "argument"
                self.say(file, line, f"{where}: required {kind} `{name}` is missing")

    def common(self, file, line, where, name, spec):
        if spec.get("deprecated"):
            msg = spec["deprecated"] if isinstance(spec["deprecated"], str) else "deprecated"
            self.say(file, line, f"{where}: `{name}` is deprecated: {msg}")

    def config(self, d: Path):
        try:
            files = read_dir(d)
        except hcl.ParseError as e:
            self.problems.append(f"parse error: {e}")
            return
        reqs = required_providers(files)
        self.callees(d, files, reqs)
        used: dict[str, list] = {}  # provider -> [(file, block)]
        for file, body in files:
            for b in body:
                if isinstance(b, hcl.Block) and b.type in ("resource", "data") and b.labels:
                    p = provider_of(b.labels[0])
                    if p is None:
                        self.say(file, b.line, f"{b.labels[0]}: no schema for this provider (known: {', '.join(PROVIDERS)})")
                        continue
                    used.setdefault(p, []).append((file, b))
        for p, blocks in sorted(used.items()):
            if p not in reqs:
                self.say(blocks[0][0], blocks[0][1].line, f"provider `{p}` is used but not in this module's required_providers")
                continue
            rfile, rline, constraint = reqs[p]
            versions = self.schemas.get(p, [])
            if not versions:
                self.say(rfile, rline, f"provider `{p}`: no schema in {SCHEMAS}")
                continue
            allowed = [(v, s) for v, s in versions if allows(constraint, v)]
            if not allowed:
                self.say(rfile, rline, f"provider `{p}` {constraint!r} allows none of the versions with a schema ({', '.join(show(v) for v, _ in versions)})")
                continue
            low = floor(constraint)
            if low is None:
                self.say(rfile, rline, f"provider `{p}` {constraint!r} has no lower bound")
            elif len(versions) > 1 and low < versions[0][0]:
                self.say(rfile, rline, f"provider `{p}` floor {show(low)} is older than the oldest version with a schema ({show(versions[0][0])}): nothing shows the module works there; raise the floor")
            for v, schema in allowed:
                for file, b in blocks:
                    kind = "resource" if b.type == "resource" else "data"
                    types = schema.get(kind, {})
                    rtype = b.labels[0]
                    where = f"{'data.' if kind == 'data' else ''}{rtype}.{b.labels[1] if len(b.labels) > 1 else '?'} ({p} {show(v)})"
                    if rtype not in types:
                        self.say(file, b.line, f"{where}: unknown {kind} type `{rtype}`{close(rtype, types)} (terraform/schemas holds only the types terraform/ uses: run `scripts/tfschema.py trim` if it is real)")
                        continue
                    self.body(file, where, b.body, types[rtype]["args"], "top", b.line)
                    self.checked += 1
            for file, b in blocks:
                self.by_hand(file, b.labels[0], b.body, low, f"{rfile}:{rline} allows {constraint!r}")

    def callees(self, d: Path, files, reqs):
        """A caller's provider floor must not be older than its local modules' own:
        Terraform takes the intersection, but the caller's file would promise less."""
        for file, body in files:
            for b in body:
                if not (isinstance(b, hcl.Block) and b.type == "module"):
                    continue
                src = b.attribute("source")
                if src is None or not (src.literal or "").startswith(("./", "../")):
                    continue
                try:
                    callee = required_providers(read_dir((d / src.literal).resolve()))
                except (OSError, hcl.ParseError):
                    continue
                for p, (cfile, cline, cconstraint) in callee.items():
                    if p not in reqs:
                        continue
                    mine, theirs = floor(reqs[p][2]), floor(cconstraint)
                    if theirs is not None and (mine is None or mine < theirs):
                        self.say(reqs[p][0], reqs[p][1], f"provider `{p}` {reqs[p][2]!r} allows versions older than module `{b.labels[0]}` needs ({cfile}:{cline}: {cconstraint!r})")

    def by_hand(self, file, path, items, low, allowed):
        """What changelog.json knows: arguments added after the module's provider
        floor, and deprecations the schemas do not carry."""
        for item in items:
            name = item.name if isinstance(item, hcl.Attribute) else (
                item.labels[0] if item.type == "dynamic" and item.labels else item.type)
            key = f"{path}.{name}"
            if key in self.deprecated:
                self.say(file, item.line, f"`{key}` is deprecated: {self.deprecated[key]}")
            if key in self.deprecated_empty and isinstance(item, hcl.Block) and not item.body:
                self.say(file, item.line, f"`{key}`: {self.deprecated_empty[key]}")
            if key in self.since and (low is None or version(self.since[key]) > low):
                self.say(file, item.line, f"`{key}` needs provider {self.since[key]} but {allowed}: raise the floor")
            if isinstance(item, hcl.Block):
                inner = item.body
                if item.type == "dynamic":
                    inner = next((c.body for c in item.blocks() if c.type == "content"), [])
                self.by_hand(file, key, inner, low, allowed)


def check(dirs: list[Path]) -> Checker:
    changelog_file = REPO / "terraform" / "schemas" / "changelog.json"
    changelog = json.loads(changelog_file.read_text()) if changelog_file.exists() else {}
    c = Checker(load_schemas(SCHEMAS), changelog)
    for d in dirs:
        c.config(d)
    return c


# ---- trim ----------------------------------------------------------------------------

def used_types(root: Path) -> dict[str, set[str]]:
    out = {"resource": set(), "data": set()}
    for d in tf_dirs(root):
        for _, body in read_dir(d):
            for b in body:
                if isinstance(b, hcl.Block) and b.type in out and b.labels:
                    out[b.type].add(b.labels[0])
    return out


def vendor_dir() -> Path:
    """$FLEET_TF_SCHEMAS, else shared/vendor/terraform-schemas beside the checkout
    (or beside the directory of worktrees it is in)."""
    if os.environ.get("FLEET_TF_SCHEMAS"):
        return Path(os.environ["FLEET_TF_SCHEMAS"])
    for up in (REPO.parent, REPO.parent.parent):
        d = up / "shared" / "vendor" / "terraform-schemas"
        if d.is_dir():
            return d
    return REPO.parent / "shared" / "vendor" / "terraform-schemas"


def trim(vendor: Path, out: Path) -> int:
    if not vendor.is_dir():
        print(f"trim: {vendor} does not exist (set FLEET_TF_SCHEMAS or --vendor)", file=sys.stderr)
        return 2
    used = used_types(REPO / "terraform")
    status = 0
    for f in sorted(vendor.iterdir()):
        m = re.fullmatch(r"([a-z0-9]+)-(v?[0-9.]+?)\.json(\.gz)?", f.name)
        if not m or m.group(1) not in PROVIDERS:
            continue
        opener = gzip.open if f.suffix == ".gz" else open
        with opener(f, "rt") as fh:
            full = json.load(fh)
        prefix = PROVIDERS[m.group(1)]
        trimmed = {"provider_version": full.get("provider_version", m.group(2)),
                   "source": f"{f.name}, trimmed to the types terraform/ uses by scripts/tfschema.py trim"}
        for kind in ("resource", "data"):
            want = sorted(t for t in used[kind] if t.startswith(prefix))
            for t in want:
                if t not in full.get(kind, {}):
                    print(f"trim: {m.group(1)} {m.group(2)} has no {kind} {t}", file=sys.stderr)
            trimmed[kind] = {t: full[kind][t] for t in want if t in full.get(kind, {})}
        target = out / f"{m.group(1)}-{m.group(2).lstrip('v')}.json"
        target.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n")
    return status


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        dirs = [Path(a).resolve() for a in argv[1:]] or tf_dirs(REPO / "terraform")
        c = check(dirs)
        for p in c.problems:
            print(p)
        for n in c.notes:
            print(f"note: {n}", file=sys.stderr)
        versions = "; ".join(f"{p} {', '.join(show(v) for v, _ in vs)}" for p, vs in sorted(c.schemas.items()))
        print(f"checked {c.checked} resource and data blocks (once per allowed provider version) in {len(dirs)} configurations against {versions}: {len(c.problems)} problems", file=sys.stderr)
        return 1 if c.problems else 0
    if argv[:1] == ["trim"]:
        args = argv[1:]
        vendor = vendor_dir()
        out = SCHEMAS
        while args:
            if args[0] == "--vendor" and len(args) > 1:
                vendor, args = Path(args[1]), args[2:]
            elif args[0] == "--out" and len(args) > 1:
                out, args = Path(args[1]), args[2:]
            else:
                print(__doc__, file=sys.stderr)
                return 2
        out.mkdir(parents=True, exist_ok=True)
        return trim(vendor, out)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
