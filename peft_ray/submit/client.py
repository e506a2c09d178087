"""The Ray Jobs REST API (the dashboard, port 8265) with a bounded connect and readable errors.

Ray's ``JobSubmissionClient`` sends requests without a timeout, so an address that
drops packets would hang the laptop for minutes. We first probe ``/api/version``
with a short connect timeout and turn every failure (no answer, refused, 401, 403)
into a message that says what to do; only then is the Ray client built.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from typing import Callable, Optional

from peft_ray.errors import JobError
from peft_ray.submit.auth import TOKEN_ENV, TOKEN_PATH_ENV, Token, default_token_path, find_token, \
    require_token_if_token_mode

DEFAULT_ADDRESS = "http://127.0.0.1:8265"   # where `ray dashboard cluster.yaml` forwards the head's dashboard
ADDRESS_ENVS = ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")  # the ones `ray job submit` reads
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def resolve_address(address: Optional[str]) -> str:
    """--address, else $RAY_API_SERVER_ADDRESS / $RAY_ADDRESS (if http), else the forwarded local port."""
    if not address:
        name = _address_env()
        address = os.environ[name] if name else DEFAULT_ADDRESS
    address = address.strip().rstrip("/")
    if address.startswith("ray://"):
        raise JobError(f"--address {address}: jobs are submitted to the dashboard's HTTP address "
                       "(e.g. http://HEAD:8265), not to the Ray Client's ray:// address")
    if "://" not in address:
        address = "http://" + address
    return address


def address_source(address: Optional[str]) -> str:
    """Where resolve_address took the address from, for messages: an exported variable is easy to
    forget (docs/cluster.md exports RAY_ADDRESS, and `train` reads the same variable)."""
    if address:
        return ""
    name = _address_env()
    return f" (from ${name})" if name else " (the default: no --address, $RAY_API_SERVER_ADDRESS or $RAY_ADDRESS)"


def _address_env() -> Optional[str]:
    """The first of ADDRESS_ENVS that holds a dashboard address (not empty, `auto` or `ray://`)."""
    return next((n for n in ADDRESS_ENVS if os.environ.get(n, "") not in ("", "auto")
                 and not os.environ[n].startswith("ray://")), None)


def probe(address: str, token: Optional[Token], timeout_s: float, source: str = "") -> str:
    """GET /api/version within `timeout_s` to connect; returns the cluster's Ray version. `source`
    (address_source's words) follows the address in messages."""
    import requests

    address_shown = address + source
    headers = token.headers() if token else {}
    try:
        r = requests.get(f"{address}/api/version", headers=headers, timeout=(timeout_s, timeout_s))
    except requests.exceptions.Timeout:
        raise JobError(f"no answer from the Ray dashboard at {address_shown} within {timeout_s:g} s. Is the "
                       "cluster up (`ray up cluster.yaml`) and its dashboard forwarded (`ray dashboard "
                       "cluster.yaml`, then --address http://127.0.0.1:8265)?") from None
    except requests.exceptions.RequestException as e:
        raise JobError(f"cannot reach the Ray dashboard at {address_shown} ({type(e).__name__}). Is the cluster "
                       "up and is this the dashboard's address (port 8265)?") from None
    _raise_for_auth(r.status_code, token)
    if r.status_code != 200:
        raise JobError(f"{address}/api/version{source} answered HTTP {r.status_code}: is this a Ray dashboard?")
    return str(r.json().get("ray_version", "?"))


def _raise_for_auth(status: int, token: Optional[Token]) -> None:
    if status == 401:
        raise JobError(f"the cluster requires a token and none was found: set {TOKEN_ENV} or "
                       f"{TOKEN_PATH_ENV}, or write it to {default_token_path()} (`ray get-auth-token` on the "
                       "head prints it)")
    if status == 403:
        raise JobError(f"the cluster rejected the token from {token.source if token else '?'}: use the "
                       "token the cluster was started with (`ray get-auth-token` on the head)")


def connect(address: Optional[str], timeout_s: float = 10.0, warn: Callable[[str], None] = print):
    """A ready JobSubmissionClient for `address` (probed first, token attached if there is one)."""
    import ray
    from ray.job_submission import JobSubmissionClient

    url = resolve_address(address)
    token = find_token()
    require_token_if_token_mode(token)
    version = probe(url, token, timeout_s, address_source(address))
    if version.split(".")[:2] != ray.__version__.split(".")[:2]:
        warn(f"warning: the cluster runs Ray {version}, this machine Ray {ray.__version__}; "
             "keep them equal (cluster.yaml pins the version)")
    # Our own header: Ray's client adds its token only when this process runs in token mode.
    return JobSubmissionClient(url, headers=token.headers() if token else None)


ALIVE_NODES = "/api/v0/nodes?filter_keys=state&filter_predicates=%3D&filter_values=ALIVE&limit=10000"


NODES_WAIT_S = 30.0


def cluster_cpus(address: Optional[str], timeout_s: float = 10.0, wait_s: float = NODES_WAIT_S) -> Optional[float]:
    """The CPUs of the cluster's alive nodes, from the dashboard's state API (the address and
    token `submit` uses). Right after `ray start --head` the dashboard answers before the head
    node has registered (no nodes yet): polled for up to `wait_s`. None when the dashboard does
    not say (an older Ray, the API off, still no node)."""
    import time

    import requests

    url = resolve_address(address)
    token = find_token()
    deadline = time.monotonic() + wait_s
    while True:
        try:
            r = requests.get(url + ALIVE_NODES, headers=token.headers() if token else {},
                             timeout=(timeout_s, timeout_s))
            _raise_for_auth(r.status_code, token)
            nodes = r.json()["data"]["result"]["result"] if r.status_code == 200 else None
        except (requests.exceptions.RequestException, ValueError, KeyError, TypeError):
            return None
        if not isinstance(nodes, list):
            return None
        if nodes:
            return float(sum((n.get("resources_total") or {}).get("CPU", 0) for n in nodes))
        if time.monotonic() >= deadline:
            return None
        time.sleep(1.0)


# Right after `ray start --head` the dashboard answers before its job agent is up and says
# "No available agent to submit job, please try again later" (HTTP 500): wait, as a user would.
AGENT_WAIT_S = 60.0
AGENT_POLL_S = 2.0
NO_AGENT = "No available agent"


@contextlib.contextmanager
def quiet_upload():
    """Ray's client logs every ignore rule it applies and each packaging step at INFO, and warns
    that it now skips `.git`: peft-ray has printed its own upload plan (files, size, excludes,
    `.git` among them) just before, so during the upload only Ray's errors (and its packaging
    warnings) stay on the terminal."""
    levels = {"ray._private.runtime_env.packaging": logging.WARNING,
              "ray.dashboard.modules.dashboard_sdk": logging.WARNING,
              "ray._private.runtime_env.working_dir": logging.ERROR}
    old = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in old.items():
            logging.getLogger(name).setLevel(level)


def call(fn: Callable, *args, warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
         wait_s: float = AGENT_WAIT_S, **kwargs):
    """Run one Jobs API call, turning Ray's auth/HTTP errors into JobErrors; a cluster whose job
    agent is still starting is retried for up to `wait_s` seconds."""
    import time

    from ray.exceptions import AuthenticationError

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return fn(*args, **kwargs)
        except AuthenticationError as e:
            raise JobError(str(e).splitlines()[0]) from None
        except RuntimeError as e:  # the SDK raises RuntimeError("Request failed with status code 404: ...")
            if NO_AGENT not in str(e):
                raise JobError(str(e)) from None
            if time.monotonic() >= deadline:
                raise JobError(f"the cluster's job agent did not come up within {wait_s:.0f}s ({NO_AGENT}); "
                               "its reason is in the head's /tmp/ray/session_latest/logs/dashboard_agent.log "
                               "(often a port in use: another Ray on the machine holds the agent's port 52365; "
                               "give this head its own, `ray start --head --dashboard-agent-listen-port ...`), "
                               "then submit again") from None
            warn(f"waiting for the cluster's job agent ({NO_AGENT}); retrying for up to {wait_s:.0f}s")
            time.sleep(AGENT_POLL_S)


def follow_logs(client, job_id: str, out=sys.stdout, stop_hint: str = "") -> str:
    """Stream the job's driver output until it ends; returns the final status name."""
    import logging

    # Ray's SDK logs "WebSocket closed for job ... with close code 1000" at INFO when a job ends,
    # after its last line: the status line below says that
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except KeyboardInterrupt:
        stop = stop_hint or f"peft-ray jobs stop {job_id}"
        print(f"\nstopped following; the job keeps running. Stop it with: {stop}", file=sys.stderr)
        raise SystemExit(130)
    return status_name(call(client.get_job_status, job_id))


def status_name(status) -> str:
    return str(getattr(status, "value", status))
