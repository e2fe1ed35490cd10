"""Packs a fleet-reporter binary as an AWS Lambda zip, byte for byte reproducibly.

    python3 scripts/lambda_zip.py BINARY OUT.zip

The zip holds one entry, `bootstrap` (what the provided.al2023 runtime runs), mode
0755, with a fixed timestamp (1980-01-01, the earliest a zip can hold), no extra
fields and a fixed compression level: the same binary always gives the same zip,
whatever its mtime or the umask, so Terraform's source_code_hash (the zip's
SHA-256) changes only when the binary does and a rebuild does not redeploy the
function. flake.nix's fleet-reporter-lambda and scripts/lambda-zip.sh use it;
tests/tests/lambda_zip.rs checks it. Standard library only.
"""

import sys
import zipfile


def pack(binary: str, out: str) -> None:
    with open(binary, "rb") as f:
        data = f.read()
    info = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
    info.create_system = 3  # Unix, so the mode below is honoured
    info.external_attr = (0o100755 & 0xFFFF) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    pack(sys.argv[1], sys.argv[2])
