"""Imported by the function processes' forkserver only (devtools.function_worker.PRELOAD): every botocore
session in a process forked from it reads the AWS service models through one loader, filled before the fork
with the models the functions use.

A function process makes its clients on its first event, as in Lambda, and each new session (boto3's
default one, Powertools' own) would read and parse each service's JSON model again: about a tenth of a test
run's CPU. The models are the same files either way, so no client behaves differently.
"""

from __future__ import annotations

import boto3
import botocore.loaders
import botocore.session

# What src/ makes clients (or resources) of.
SERVICES = ("s3", "sqs", "events", "stepfunctions", "secretsmanager", "ssm")
RESOURCES = ("dynamodb",)

_create_loader = botocore.session.create_loader
_shared = _create_loader()


def _loader(search_path_string: str | None = None) -> botocore.loaders.Loader:
    if search_path_string is not None:  # AWS_DATA_PATH set: models of its own, as botocore would read them
        return _create_loader(search_path_string)
    # Every boto3 session appends its data directory to the loader it gets: once is enough.
    _shared.search_paths[:] = list(dict.fromkeys(_shared.search_paths))
    return _shared


botocore.session.create_loader = _loader

_session = boto3.session.Session(
    region_name="us-east-1", aws_access_key_id="preload", aws_secret_access_key="preload"
)
for _service in SERVICES:
    _session.client(_service)
for _service in RESOURCES:
    _session.resource(_service)
del _session
