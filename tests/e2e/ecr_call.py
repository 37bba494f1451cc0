#!/usr/bin/env python3
"""Calls an ECR-API operation the aws CLI does not know (Berth's own, such as
PutRepositoryScanPolicy), signed with SigV4 by botocore from the usual AWS credentials.

    ecr_call.py ENDPOINT OPERATION JSON      -> prints the JSON answer; exit 1 on an error answer"""
import json, sys

import botocore.session
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

endpoint, op, body = sys.argv[1].rstrip("/") + "/", sys.argv[2], sys.argv[3]
session = botocore.session.get_session()
region = session.get_config_variable("region") or "us-east-1"
req = AWSRequest(method="POST", url=endpoint, data=body.encode(), headers={
    "Content-Type": "application/x-amz-json-1.1",
    "X-Amz-Target": f"AmazonEC2ContainerRegistry_V20150921.{op}"})
SigV4Auth(session.get_credentials(), "ecr", region).add_auth(req)
r = requests.post(endpoint, data=body.encode(), headers=dict(req.headers), timeout=30)
print(json.dumps(r.json(), indent=1) if r.content else "")
sys.exit(0 if r.ok else 1)
