"""The embedded AWS as function processes reach it: moto's threaded server on loopback, checking IAM.

Every request is signed and checked against the caller's policies (moto's access control, on from the first
request). The deploying identity is an IAM user with an allow-all policy, made directly in moto's backend
(it has to exist before any signed request can pass); functions get credentials of their own role, assumed
as the Lambda service assumes it.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from botocore.config import Config
from moto import mock_aws, settings
from moto.iam.models import iam_backends
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.sqs.models import sqs_backends
from moto.sts.models import sts_backends
from werkzeug.serving import make_server

from devtools.embedded_aws.aws_api import local_client
from devtools.embedded_aws.aws_faults import AwsFaults

logger = logging.getLogger("devtools.embedded_aws")

DEPLOYER_USER = "embedded-aws-deployer"
ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# Lambda's credentials last as long as the environment; a local stack lives for hours at most.
ROLE_SESSION_SECONDS = 12 * 3600
# The deployer's clients: moto answers in milliseconds, so a short connect timeout finds a dead server fast.
CLIENT_CONFIG = Config(connect_timeout=5, read_timeout=120, retries={"mode": "standard", "max_attempts": 3})


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)

    def environment(self) -> dict[str, str]:
        """As the Lambda runtime gives them to a function."""
        variables = {"AWS_ACCESS_KEY_ID": self.access_key_id, "AWS_SECRET_ACCESS_KEY": self.secret_access_key}
        if self.session_token is not None:
            variables["AWS_SESSION_TOKEN"] = self.session_token
        return variables

    def client_arguments(self) -> dict[str, str | None]:
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "aws_session_token": self.session_token,
        }


# How often the server's loop looks whether stop() was asked: werkzeug's 0.5 s made every stack's close wait
# half a second for nothing.
SHUTDOWN_POLL_SECONDS = 0.05


class ServiceDispatcher(DomainDispatcherApplication):
    """moto's dispatcher with the service of each host looked up once: moto lists its own package directory
    (a listdir and two hundred stats) on every request to find it, a tenth of the tests' CPU."""

    def __init__(self, create_app: Any) -> None:
        super().__init__(create_app)
        self._backend_for_host: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        if host not in self._backend_for_host:
            # Two threads may both look a new host up: they find the same answer.
            self._backend_for_host[host] = super().get_backend_for_host(host)
        return self._backend_for_host[host]


class FaultableMotoServer(ThreadedMotoServer):
    """moto's threaded server with the fault layer in front of its application (devtools.embedded_aws.aws_faults)."""

    def __init__(self, faults: AwsFaults, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults = faults

    def _server_entry(self) -> None:  # as moto's, with the application wrapped
        app = self.faults.middleware(ServiceDispatcher(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever(poll_interval=SHUTDOWN_POLL_SECONDS)


class LocalAwsServer:
    """moto's backends behind a server on 127.0.0.1 (a free port), with IAM enforced; start() and stop()."""

    def __init__(self, region: str, account_id: str, partition: str = "aws") -> None:
        self.region = region
        self.account_id = account_id
        self.partition = partition
        self.endpoint = ""
        self.deployer: Credentials | None = None
        self._mock: Any = None
        self._server: ThreadedMotoServer | None = None
        self._enforcing: Any = None
        # Chosen operations answered with errors, switchable while running (none until rules are added).
        self.faults = AwsFaults()

    def start(self) -> None:
        # mock_aws gives fresh backends (and takes them away on stop); its config makes Step Functions run
        # the definitions. The server serves those same backends over HTTP.
        self._mock = mock_aws(config={"stepfunctions": {"execute_state_machine": True}})
        self._mock.start()
        iam = iam_backends[self.account_id][self.partition]
        iam.create_user(self.region, DEPLOYER_USER)
        iam.put_user_policy(DEPLOYER_USER, "allow-all", json.dumps(ALLOW_ALL))
        key = iam.create_access_key(DEPLOYER_USER)
        self.deployer = Credentials(key.access_key_id, key.secret_access_key)
        self.faults.exempt.add(key.access_key_id)  # the test or bench itself sets up and reads undisturbed
        # werkzeug logs every request at INFO: thousands of lines in a run, none of them news.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = FaultableMotoServer(self.faults, ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        self._enforcing = mock.patch.object(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
        self._enforcing.start()

    def stop(self) -> None:
        if self._enforcing is not None:
            self._enforcing.stop()
            self._enforcing = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._mock is not None:
            self._mock.stop()
            self._mock = None

    def client(self, service: str, credentials: Credentials | None = None) -> Any:
        """A boto3 client on this server, as the deployer unless other credentials are given."""
        credentials = credentials or self.deployer
        assert credentials is not None, "start() first"
        return local_client(
            service,
            region_name=self.region,
            endpoint_url=self.endpoint,
            config=CLIENT_CONFIG,
            **credentials.client_arguments(),
        )

    def queue_arrivals(self, queue_url: str) -> QueueArrivals:
        """Wakes whoever waits on it when a message is added to the queue (sent, or moved there by moto)."""
        queue = sqs_backends[self.account_id][self.region].get_queue(queue_url.rsplit("/", 1)[-1])
        return QueueArrivals(queue._messages_lock)

    def assume_role(self, role_arn: str, session_name: str) -> Credentials:
        """What the Lambda (or Step Functions) service does with a function's role: no caller's policy is
        checked, the role's trust policy names the service."""
        assumed = sts_backends[self.account_id][self.partition].assume_role(
            region_name=self.region,
            role_session_name=session_name[:64],
            role_arn=role_arn,
            policy=None,
            duration=ROLE_SESSION_SECONDS,
            external_id=None,
        )
        return Credentials(assumed.access_key_id, assumed.secret_access_key, assumed.session_token)


class QueueArrivals:
    """moto's queue notifies its condition whenever it adds a message; this waits on it, in this process."""

    def __init__(self, condition: threading.Condition) -> None:
        self._condition = condition

    def wait(self, timeout: float, stop: threading.Event) -> bool:
        """True when a message arrived (or wake() was called) within `timeout` seconds. Returns at once once
        `stop` is set: looked at under the lock wake() takes, so a stop set just before is not waited out."""
        with self._condition:
            if stop.is_set():
                return True
            return self._condition.wait(timeout)

    def wake(self) -> None:
        with self._condition:
            self._condition.notify_all()
