"""`helm test` for Herald (templates/tests/readiness.yaml), like cert-manager's startupapicheck.

Passes once the API server serves the ScheduledPost CRD and every Deployment of the release
has rolled out with all replicas available (the checks of `kubectl rollout status`), polling
until HERALD_TEST_TIMEOUT_SECONDS. Runs in the herald image with the standard library only,
as the chart's test ServiceAccount (get on those Deployments; discovery is open to every
authenticated user). Prints each check; on failure, exits 1 naming what is not ready.
"""

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

# The pod's projected token and CA; another directory runs the same check from outside a pod.
SA_DIR = os.environ.get("HERALD_TEST_SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")
NAMESPACE = os.environ["HERALD_TEST_NAMESPACE"]
DEPLOYMENTS = [d for d in os.environ["HERALD_TEST_DEPLOYMENTS"].split(",") if d]
GROUP_VERSION = os.environ["HERALD_TEST_GROUP_VERSION"]
PLURAL = os.environ["HERALD_TEST_PLURAL"]
TIMEOUT = float(os.environ.get("HERALD_TEST_TIMEOUT_SECONDS", "120"))
HOST = os.environ["KUBERNETES_SERVICE_HOST"]
PORT = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
BASE = f"https://[{HOST}]:{PORT}" if ":" in HOST else f"https://{HOST}:{PORT}"
TLS = ssl.create_default_context(cafile=os.path.join(SA_DIR, "ca.crt"))


def get(path):
    """GET path from the API server as the ServiceAccount; the parsed JSON body."""
    with open(os.path.join(SA_DIR, "token")) as f:  # re-read: the kubelet rotates it
        token = f.read().strip()
    request = urllib.request.Request(BASE + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=TLS, timeout=10) as response:
        return json.load(response)


def crd_problem():
    resources = get(f"/apis/{GROUP_VERSION}").get("resources", [])
    if not any(r.get("name") == PLURAL for r in resources):
        return f"the API server does not serve {PLURAL}.{GROUP_VERSION} (is the CRD installed?)"
    return None


def deployment_problem(name):
    d = get(f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}")
    want = d["spec"].get("replicas", 1)
    status = d.get("status", {})
    updated = status.get("updatedReplicas", 0)
    available = status.get("availableReplicas", 0)
    if status.get("observedGeneration", 0) < d["metadata"].get("generation", 0):
        return f"deployment {name}: the new spec is not observed yet"
    if updated < want:
        return f"deployment {name}: {updated} of {want} replicas updated"
    if status.get("replicas", 0) > updated:
        return f"deployment {name}: {status['replicas'] - updated} old replicas still running"
    if available < updated:
        return f"deployment {name}: {available} of {updated} updated replicas available"
    return None


def problems():
    found = []
    for check, arg in [(crd_problem, None)] + [(deployment_problem, d) for d in DEPLOYMENTS]:
        try:
            problem = check() if arg is None else check(arg)
        except urllib.error.HTTPError as e:
            problem = f"{e.url}: HTTP {e.code} {e.read().decode(errors='replace')[:300]}"
        except (OSError, ValueError) as e:
            problem = f"{check.__name__}({arg or ''}): {e}"
        if problem:
            found.append(problem)
    return found


def main():
    deadline = time.monotonic() + TIMEOUT
    while True:
        found = problems()
        if not found:
            print(f"ok: {PLURAL}.{GROUP_VERSION} is served;", end=" ")
            print(f"rolled out and available: {', '.join(DEPLOYMENTS)}")
            return 0
        if time.monotonic() >= deadline:
            print(f"not ready after {TIMEOUT:g} s:", *found, sep="\n  ", file=sys.stderr)
            return 1
        print("waiting:", "; ".join(found), flush=True)
        time.sleep(2)


sys.exit(main())
