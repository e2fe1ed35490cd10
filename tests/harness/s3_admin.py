"""Admin calls the fleet test harness makes on a test S3 server (SeaweedFS, moto,
MinIO, LocalStack), with boto3: ordinary S3 and IAM API requests, nothing
server-specific except `bootstrap-moto`.

Called by tests/src/s3.rs, one command per process:

    s3_admin.py --endpoint URL wait-ready             # until ListBuckets answers
    s3_admin.py --endpoint URL create-bucket NAME
    s3_admin.py --endpoint URL create-user NAME < policy.json
        # CreateUser, PutUserPolicy (the policy text from stdin), CreateAccessKey
    s3_admin.py --endpoint URL put-bucket-policy BUCKET < policy.json
    s3_admin.py --endpoint URL create-users < users.json
        # create-user for each {"name": ..., "policy": ...} of a JSON list, in one
        # process (a fleet of hosts without a Python start per user); prints a JSON
        # list of keys in the same order
    s3_admin.py --endpoint URL bootstrap-moto
        # on a fresh moto server: an admin user allowed everything, then
        # IAM enforcement on (POST /moto-api/reset-auth with body 0)

The admin credentials come from FLEET_S3_ADMIN_KEY_ID and FLEET_S3_ADMIN_SECRET
(not needed for bootstrap-moto). Commands that create credentials print them as
one JSON object: {"access_key_id": ..., "secret_access_key": ...}. Errors go to
stderr with exit status 1.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(f"s3_admin.py: {e}: run scripts/deps.sh to create .venv with boto3")

POLICY_NAME = "fleet"
REGION = "us-east-1"


def client(service, endpoint, key_id, secret):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=None,
        region_name=REGION,
        config=botocore.config.Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def admin_keys():
    try:
        return os.environ["FLEET_S3_ADMIN_KEY_ID"], os.environ["FLEET_S3_ADMIN_SECRET"]
    except KeyError as e:
        sys.exit(f"s3_admin.py: environment variable {e} is not set")


def print_keys(key):
    json.dump(
        {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]},
        sys.stdout,
    )
    sys.stdout.write("\n")


def wait_ready(endpoint, timeout=30.0):
    s3 = client("s3", endpoint, *admin_keys())
    deadline = time.monotonic() + timeout
    while True:
        try:
            s3.list_buckets()
            return
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            if time.monotonic() > deadline:
                sys.exit(f"s3_admin.py: {endpoint} not ready after {timeout:.0f} s: {e}")
            time.sleep(0.1)


def create_bucket(endpoint, name):
    client("s3", endpoint, *admin_keys()).create_bucket(Bucket=name)


def create_user(endpoint, name):
    policy = sys.stdin.read()
    json.loads(policy)  # fail here, with the parse error, rather than in the server
    iam = client("iam", endpoint, *admin_keys())
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=POLICY_NAME, PolicyDocument=policy)
    print_keys(iam.create_access_key(UserName=name)["AccessKey"])


def create_users(endpoint):
    users = json.load(sys.stdin)
    iam = client("iam", endpoint, *admin_keys())
    keys = []
    for u in users:
        policy = u["policy"]
        json.loads(policy)
        iam.create_user(UserName=u["name"])
        iam.put_user_policy(UserName=u["name"], PolicyName=POLICY_NAME, PolicyDocument=policy)
        key = iam.create_access_key(UserName=u["name"])["AccessKey"]
        keys.append(
            {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
        )
    json.dump(keys, sys.stdout)
    sys.stdout.write("\n")


def put_bucket_policy(endpoint, bucket):
    policy = sys.stdin.read()
    json.loads(policy)
    client("s3", endpoint, *admin_keys()).put_bucket_policy(Bucket=bucket, Policy=policy)


def bootstrap_moto(endpoint):
    # Enforcement is off at start, so any key signs these calls.
    iam = client("iam", endpoint, "bootstrap", "bootstrap")
    iam.create_user(UserName="fleet-admin")
    everything = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
    }
    iam.put_user_policy(
        UserName="fleet-admin", PolicyName="everything", PolicyDocument=json.dumps(everything)
    )
    key = iam.create_access_key(UserName="fleet-admin")["AccessKey"]
    # moto reads the body as a number; a form content type would make Flask swallow it.
    req = urllib.request.Request(
        endpoint + "/moto-api/reset-auth",
        data=b"0",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "ok":
        sys.exit(f"s3_admin.py: moto refused reset-auth: {body}")
    print_keys(key)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("wait-ready")
    sub.add_parser("create-bucket").add_argument("name")
    sub.add_parser("create-user").add_argument("name")
    sub.add_parser("put-bucket-policy").add_argument("name")
    sub.add_parser("bootstrap-moto")
    sub.add_parser("create-users")
    args = ap.parse_args()
    try:
        if args.cmd == "wait-ready":
            wait_ready(args.endpoint)
        elif args.cmd == "create-bucket":
            create_bucket(args.endpoint, args.name)
        elif args.cmd == "create-user":
            create_user(args.endpoint, args.name)
        elif args.cmd == "put-bucket-policy":
            put_bucket_policy(args.endpoint, args.name)
        elif args.cmd == "bootstrap-moto":
            bootstrap_moto(args.endpoint)
        elif args.cmd == "create-users":
            create_users(args.endpoint)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
        sys.exit(f"s3_admin.py {args.cmd} on {args.endpoint}: {e}")
    except (OSError, ValueError) as e:
        sys.exit(f"s3_admin.py {args.cmd} on {args.endpoint}: {e}")


if __name__ == "__main__":
    main()
